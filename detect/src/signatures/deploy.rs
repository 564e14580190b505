//! Deployment regressions with a fan-out change: a new version of a service appears, and
//! after it latency or errors rise downstream of it.
//!
//! Versions come from the records (`destination_version` of requests a service receives,
//! `source_version` of the calls it makes), through the pairs' zone/version breakdowns. Per
//! service and version the detector learns the **call pattern**: calls per request to each
//! destination (requests `S@v → D` ÷ requests received by `S@v`, an EWMA over windows with at
//! least `min-requests` received) and the mean latency of requests to `S@v`.
//!
//! A version of a service seen for at least 30 windows that was never seen before starts a
//! **watch** of `watch` (10 min). In each watched window it fires on `version/<S>/<v>` when
//!
//! ```text
//! (downstream pairs slower or failing  ∨  S@v slower than the previous version by latency-factor)
//!   ∧  (the call pattern changed  ∨  S@v slower than the previous version)
//! ```
//!
//! where *downstream* pairs are the pairs into S's destinations and their destinations (two
//! hops, whoever calls them: a shared cache the new version thrashes slows everyone's calls),
//! *slower or failing* is a p99 at least `latency-factor` × its baseline with P ≤
//! `max-tail-probability`, or an error ratio whose binomial tail is that improbable, and the
//! pattern *changed* when calls per request to a destination moved by `pattern-factor` (either
//! way) or a destination with at least 0.1 calls per request appeared or vanished.
//!
//! The finding names the service and version (subject), the previous version, and how the
//! call pattern changed (related: `suspect-version`, `previous-version`, `destination` /
//! `new-destination` / `vanished-destination` with calls per request); evidence: the worst
//! downstream pair's p99 with its tail probability, and the changed calls per request.
//! Severity `critical`. A deployment that changes neither the call pattern nor the latency
//! gives nothing, whatever happens elsewhere.
//!
//! What it can't see: versions the records don't carry (map them with `[mapping]` rules, or
//! log the peer metadata), regressions that show after the watch, or inside the service with
//! no effect on its calls and latency, and a rollout too small for `min-requests`.

use std::collections::{BTreeMap, BTreeSet};

use schemas::{Finding, PairWindow, Severity, Signature, Subject};
use serde::{Deserialize, Serialize};

use crate::adaptive::Score;
use crate::config::DeployConfig;
use crate::error::Result;
use crate::node::is_service;
use crate::signatures::generic::{error_tail, far};
use crate::signatures::{
    Scope, SignatureDetector, WindowView, counted, finding, load_state, related, save_state, scored,
};
use crate::store::Signal;
use crate::suite::{factor, tail};

/// Windows a service must have been seen before a version of it counts as new.
const KNOWN_AFTER: u32 = 30;

/// EWMA weight of a window in a version's call pattern.
const PATTERN_ALPHA: f64 = 0.1;

/// Calls per request below which a destination is not part of the pattern.
const MIN_CALLS_PER_REQUEST: f64 = 0.1;

/// Most versions remembered per service (the least recently seen is dropped).
const MAX_VERSIONS: usize = 16;

/// The validated `[detect.deploy]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploySpec {
    watch_us: i64,
    max_p: f64,
    latency_factor: f64,
    pattern_factor: f64,
    min_requests: u64,
}

impl DeploySpec {
    /// Validates `c`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the key.
    pub fn new(c: &DeployConfig, _window_us: i64) -> Result<Self> {
        Ok(DeploySpec {
            watch_us: i64::try_from(c.watch.as_micros()).unwrap_or(i64::MAX),
            max_p: tail(c.max_tail_probability, "deploy.max-tail-probability")?,
            latency_factor: factor(c.latency_factor, "deploy.latency-factor")?,
            pattern_factor: factor(c.pattern_factor, "deploy.pattern-factor")?,
            min_requests: c.min_requests.max(1),
        })
    }
}

/// What is known of one version of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Version {
    first_seen_us: i64,
    last_seen_us: i64,
    /// Windows with at least `min-requests` received.
    windows: u32,
    /// Calls per request to each destination (EWMA).
    calls_per_request: BTreeMap<String, f64>,
    /// Mean latency of requests it received, µs (EWMA).
    latency_us: f64,
}

/// A new version being watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Watch {
    version: String,
    previous: String,
    since_us: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Service {
    windows: u32,
    last_seen_us: i64,
    versions: BTreeMap<String, Version>,
    watch: Option<Watch>,
}

/// One version's traffic in one window.
#[derive(Debug, Default)]
struct Traffic<'a> {
    received: u64,
    timed: u64,
    duration_sum_us: u64,
    calls: BTreeMap<&'a str, u64>,
}

/// The deployment-regression detector.
#[derive(Debug, Clone)]
pub struct DeployRegression {
    spec: DeploySpec,
    services: BTreeMap<String, Service>,
}

impl DeployRegression {
    /// A detector with `spec` and no history.
    pub fn new(spec: DeploySpec) -> Self {
        DeployRegression {
            spec,
            services: BTreeMap::new(),
        }
    }
}

/// Per (service, version): its traffic in the window, from the pairs' breakdowns.
fn traffic(pairs: &[PairWindow]) -> BTreeMap<(&str, &str), Traffic<'_>> {
    let mut t: BTreeMap<(&str, &str), Traffic<'_>> = BTreeMap::new();
    for p in pairs {
        if !is_service(&p.source) || !is_service(&p.destination) {
            continue;
        }
        for b in &p.breakdown {
            if let Some(v) = &b.destination_version {
                let e = t.entry((&p.destination, v)).or_default();
                e.received += b.requests;
                e.timed += b.timed;
                e.duration_sum_us = e.duration_sum_us.saturating_add(b.duration_sum_us);
            }
            if let Some(v) = &b.source_version {
                *t.entry((&p.source, v))
                    .or_default()
                    .calls
                    .entry(&p.destination)
                    .or_default() += b.requests;
            }
        }
    }
    t
}

/// How calls per request changed from `before` to `now`: (destination, now, before), for
/// destinations that moved by `factor` or appeared or vanished.
fn pattern_changes(
    before: &BTreeMap<String, f64>,
    now: &BTreeMap<String, f64>,
    factor: f64,
) -> Vec<(String, f64, f64)> {
    let names: BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    let mut changes = Vec::new();
    for d in names {
        let a = before.get(d).copied().unwrap_or(0.0);
        let b = now.get(d).copied().unwrap_or(0.0);
        if a < MIN_CALLS_PER_REQUEST && b < MIN_CALLS_PER_REQUEST {
            continue;
        }
        let moved = if a < MIN_CALLS_PER_REQUEST || b < MIN_CALLS_PER_REQUEST {
            true
        } else {
            b >= factor * a || b * factor <= a
        };
        if moved {
            changes.push((d.clone(), b, a));
        }
    }
    changes
}

impl SignatureDetector for DeployRegression {
    fn name(&self) -> &'static str {
        "deploy"
    }

    fn scope(&self) -> Scope {
        Scope::Landscape
    }

    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) {
        let s = self.spec.clone();
        let w = view.window;
        let traffic = traffic(view.pairs);
        // new versions start a watch
        for (&(svc, ver), t) in &traffic {
            if t.received == 0 {
                continue;
            }
            let service = self.services.entry(svc.to_owned()).or_default();
            if service.versions.contains_key(ver) {
                continue;
            }
            if service.windows >= KNOWN_AFTER
                && let Some(previous) = service
                    .versions
                    .iter()
                    .max_by_key(|(_, v)| (v.last_seen_us, v.windows))
                    .map(|(name, _)| name.clone())
            {
                service.watch = Some(Watch {
                    version: ver.to_owned(),
                    previous,
                    since_us: w.start_us,
                });
            }
            if service.versions.len() >= MAX_VERSIONS
                && let Some(oldest) = service
                    .versions
                    .iter()
                    .filter(|(name, _)| service.watch.as_ref().is_none_or(|x| &x.previous != *name))
                    .min_by_key(|(_, v)| v.last_seen_us)
                    .map(|(name, _)| name.clone())
            {
                service.versions.remove(&oldest);
            }
            service.versions.insert(
                ver.to_owned(),
                Version {
                    first_seen_us: w.start_us,
                    ..Version::default()
                },
            );
        }
        // watched services
        for (svc, service) in &mut self.services {
            let Some(watch) = service.watch.clone() else {
                continue;
            };
            if w.start_us.saturating_sub(watch.since_us) > s.watch_us {
                service.watch = None;
                continue;
            }
            let Some(now) = traffic.get(&(svc.as_str(), watch.version.as_str())) else {
                continue;
            };
            if now.received < s.min_requests {
                continue;
            }
            let Some(prev) = service.versions.get(&watch.previous) else {
                continue;
            };
            let cpr: BTreeMap<String, f64> = now
                .calls
                .iter()
                .map(|(d, n)| ((*d).to_owned(), *n as f64 / now.received as f64))
                .collect();
            let changes = pattern_changes(&prev.calls_per_request, &cpr, s.pattern_factor);
            let latency = now.duration_sum_us as f64 / now.timed.max(1) as f64;
            let slower = now.timed > 0
                && prev.latency_us > 0.0
                && latency >= s.latency_factor * prev.latency_us;
            // downstream: pairs into its destinations and theirs, whoever calls them
            let mut downstream: BTreeSet<&str> = BTreeSet::new();
            for p in view.outflow(svc) {
                downstream.insert(&p.destination);
            }
            for d in downstream.clone() {
                for p in view.outflow(d) {
                    downstream.insert(&p.destination);
                }
            }
            let mut worst: Option<(&PairWindow, Score)> = None;
            let mut failing = Vec::new();
            for p in view
                .pairs
                .iter()
                .filter(|p| downstream.contains(p.destination.as_str()))
            {
                if let (Some(x), Some(sc)) = (
                    Signal::P99Us.of_pair(p),
                    far(view.baselines, p, Signal::P99Us),
                ) && sc.z > 0.0
                    && x >= s.latency_factor * sc.expected
                    && sc.p_high <= s.max_p
                    && worst.as_ref().is_none_or(|(_, w)| sc.p_high < w.p_high)
                {
                    worst = Some((p, sc));
                }
                if let Some(b) = view
                    .baselines
                    .pair(&p.source, &p.destination)
                    .and_then(|b| b.get(Signal::ErrorRatio))
                    && let Some(e) =
                        b.expected(&view.baselines.spec(Signal::ErrorRatio), p.window.start_us)
                    && p.requests >= s.min_requests
                    && p.error_ratio >= e + 0.05
                    && error_tail(p.requests, p.errors, e) <= s.max_p
                {
                    failing.push(p);
                }
            }
            let downstream_hurt = worst.is_some() || !failing.is_empty();
            if !(slower || downstream_hurt && !changes.is_empty()) {
                continue;
            }
            let mut evidence = Vec::new();
            if let Some((p, sc)) = &worst {
                let mut e = scored(
                    Signal::P99Us,
                    p.latency.map_or(0, |l| l.p99_us) as f64,
                    sc,
                    true,
                );
                e.signal = format!("p99_us:{}->{}", p.source, p.destination);
                evidence.push(e);
            }
            for p in &failing {
                evidence.push(counted(
                    &format!("error_ratio:{}->{}", p.source, p.destination),
                    p.error_ratio,
                    0.0,
                    "ratio",
                ));
            }
            if slower {
                evidence.push(counted("mean_latency_us", latency, prev.latency_us, "µs"));
            }
            let mut rel = vec![
                related(
                    "suspect-version",
                    &watch.version,
                    None,
                    format!("{svc} {}", watch.version),
                ),
                related(
                    "previous-version",
                    &watch.previous,
                    None,
                    format!("{svc} {}", watch.previous),
                ),
            ];
            for (d, now_cpr, before) in &changes {
                evidence.push(counted(
                    &format!("calls_per_request:{d}"),
                    *now_cpr,
                    *before,
                    "ratio",
                ));
                let role = if *before < MIN_CALLS_PER_REQUEST {
                    "new-destination"
                } else if *now_cpr < MIN_CALLS_PER_REQUEST {
                    "vanished-destination"
                } else {
                    "destination"
                };
                rel.push(related(
                    role,
                    d,
                    Some(*now_cpr),
                    format!("{now_cpr:.2} calls per request (was {before:.2})"),
                ));
            }
            let pattern = if changes.is_empty() {
                "the same call pattern".to_owned()
            } else {
                changes
                    .iter()
                    .map(|(d, a, b)| format!("{d} {b:.2} → {a:.2} calls per request"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let hurt = match &worst {
                Some((p, sc)) => format!(
                    "p99 of {} -> {} rose to {:.1} ms (baseline {:.1} ms)",
                    p.source,
                    p.destination,
                    p.latency.map_or(0, |l| l.p99_us) as f64 / 1e3,
                    sc.expected / 1e3
                ),
                None if !failing.is_empty() => format!("{} downstream pairs fail", failing.len()),
                None => format!(
                    "its own latency rose to {:.1} ms from {:.1} ms",
                    latency / 1e3,
                    prev.latency_us / 1e3
                ),
            };
            out.push(finding(
                Signature::DeployRegression,
                Subject::Version {
                    service: svc.clone(),
                    version: watch.version.clone(),
                },
                w,
                Severity::Critical,
                evidence,
                rel,
                if prev.windows >= KNOWN_AFTER {
                    schemas::Confidence::Normal
                } else {
                    schemas::Confidence::Low
                },
                format!(
                    "{svc} {} (after {}): {pattern}; {hurt}",
                    watch.version, watch.previous
                ),
            ));
        }
        // learn every version's pattern and latency, and who was seen
        for (&(svc, ver), t) in &traffic {
            let service = self.services.entry(svc.to_owned()).or_default();
            let Some(v) = service.versions.get_mut(ver) else {
                continue;
            };
            v.last_seen_us = w.end_us;
            if t.received < self.spec.min_requests {
                continue;
            }
            let first = v.windows == 0;
            v.windows += 1;
            let a = if first { 1.0 } else { PATTERN_ALPHA };
            let mut names: BTreeSet<String> = v.calls_per_request.keys().cloned().collect();
            names.extend(t.calls.keys().map(|d| (*d).to_owned()));
            for d in names {
                let x = t.calls.get(d.as_str()).copied().unwrap_or(0) as f64 / t.received as f64;
                let e = v.calls_per_request.entry(d).or_insert(x);
                *e += a * (x - *e);
            }
            v.calls_per_request
                .retain(|_, x| *x >= MIN_CALLS_PER_REQUEST / 10.0);
            if t.timed > 0 {
                let x = t.duration_sum_us as f64 / t.timed as f64;
                v.latency_us = if first {
                    x
                } else {
                    v.latency_us + a * (x - v.latency_us)
                };
            }
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for p in view.pairs {
            seen.insert(&p.source);
            seen.insert(&p.destination);
        }
        for name in seen {
            if let Some(service) = self.services.get_mut(name) {
                service.windows = service.windows.saturating_add(1);
                service.last_seen_us = w.end_us;
            }
        }
    }

    fn forget_before(&mut self, before_us: i64) {
        self.services.retain(|_, s| s.last_seen_us > before_us);
    }

    fn save(&self) -> Vec<u8> {
        save_state(&self.services)
    }

    fn load(&mut self, state: &[u8]) -> std::result::Result<(), String> {
        self.services = load_state(state)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_changes_list_moved_new_and_vanished_destinations() {
        let before = BTreeMap::from([
            ("cache".to_owned(), 1.0),
            ("db".to_owned(), 0.5),
            ("old".to_owned(), 0.3),
        ]);
        let now = BTreeMap::from([
            ("cache".to_owned(), 4.0),
            ("db".to_owned(), 0.6),
            ("new".to_owned(), 0.2),
        ]);
        assert_eq!(
            pattern_changes(&before, &now, 1.5),
            [
                ("cache".to_owned(), 4.0, 1.0),
                ("new".to_owned(), 0.2, 0.0),
                ("old".to_owned(), 0.0, 0.3),
            ]
        );
        assert!(pattern_changes(&before, &before, 1.5).is_empty());
    }
}
