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
//!    (the call pattern changed  ∧  (downstream pairs slower or failing  ∨  S@v slower))
//!  ∨ (the same call pattern  ∧  S@v slower  ∧  no downstream pair slower or failing)
//! ```
//!
//! where *downstream* pairs are the pairs into S's destinations and their destinations (two
//! hops, whoever calls them: a shared cache the new version thrashes slows everyone's calls),
//! *slower or failing* is a p99 at least `latency-factor` × its baseline with P ≤
//! `max-tail-probability`, or an error ratio whose binomial tail is that improbable, and the
//! pattern *changed* when calls per request to a destination moved by `pattern-factor` (either
//! way) or a destination with at least 0.1 calls per request appeared or vanished, with a
//! count of calls that improbable under the old pattern (Poisson).
//!
//! *S@v slower*: the lower median of its windows' mean latencies since the watch began is at
//! least `latency-factor` × the previous version's mean latency — what it was (an EWMA over
//! its last thousand requests or so), or, when more, what it is in the same windows side by
//! side while both run (once the previous version has `min-requests` of them: a slow shared
//! dependency slows both), within zones when the records name them (each zone's previous mean
//! weighted by the new version's requests there: a rollout starts in one zone, and a slower
//! zone is not a slower version) — and the watch's pooled mean is that high with P ≤
//! `max-tail-probability` (normal, by the central limit theorem, with the previous version's
//! spread of one request, at least its mean). A median of windows, because one request that
//! hits a pause of a few hundred ms doubles the mean of a window of a hundred: a version is
//! slower when most of its windows are, and from its second window on, one slow window is not
//! enough. A version that calls as its predecessor did and is slow along with its
//! dependencies waits on them: a benign deployment during someone else's incident is not
//! blamed.
//!
//! The finding names the service and version (subject), the previous version, and how the
//! call pattern changed (related: `suspect-version`, `previous-version`, `destination` /
//! `new-destination` / `vanished-destination` with calls per request); evidence: the worst
//! downstream pair's p99 with its tail probability, and the changed calls per request.
//! Severity `critical`. A deployment that changes neither the call pattern nor the latency
//! gives nothing, whatever happens elsewhere.
//!
//! # Deployment events
//!
//! Where the records carry no version (NGINX logs, a mesh without peer metadata), a deploy
//! history can: [`DeploymentEvent`]s (`[detect.deploy] events`, a JSON-lines file, read by the
//! driver) put the service's unversioned traffic under the version running from each event on
//! (from the window in which the rollout starts; before the first event, under its
//! `previous_version`, or `(previous)`), and the detector works as with versions in the
//! records. A rolling deployment is then seen as a whole, old and new pods together: its
//! change shows once enough of it runs (a pattern moved by `pattern-factor` overall), and there
//! is no side-by-side latency. Records that carry a version keep it: they win over events.
//!
//! What it can't see: versions neither the records nor the events carry (map them with
//! `[mapping]` rules, log the peer metadata, or give the deploy history), regressions that
//! show after the watch, or inside the service with no effect on its calls and latency, a
//! version that calls as before and slows while its dependencies are slow too (it is taken
//! to wait on them), and a rollout too small for `min-requests`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use schemas::{Finding, PairWindow, Severity, Signature, Subject};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, DiscreteCDF, Normal, Poisson};

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

/// Requests a version's mean latency and its spread remember (the weight of a window in their
/// EWMA is its timed requests ÷ this, at least a hundredth).
const LATENCY_MEMORY: f64 = 1_000.0;

/// Calls per request below which a destination is not part of the pattern.
const MIN_CALLS_PER_REQUEST: f64 = 0.1;

/// Most versions remembered per service (the least recently seen is dropped).
const MAX_VERSIONS: usize = 16;

/// Label of a service's unversioned traffic before its first [`DeploymentEvent`] when that
/// event names no previous version.
pub const PREVIOUS: &str = "(previous)";

/// One deployment from a deploy history: `service` starts rolling out `version` at `at_us`.
///
/// The file form (`[detect.deploy] events`) is one JSON object per line, `at` in RFC 3339
/// (UTC), e.g. what a CD system's notification hook or a `kubectl rollout` wrapper writes:
///
/// ```text
/// {"service":"pricing","version":"v2.6.0","at":"2026-01-05T01:06:02Z","previous_version":"v2.5.3"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeploymentEvent {
    /// The deployed service, as the records name it (after `[mapping]`).
    pub service: String,
    /// The version rolled out.
    pub version: String,
    /// When the rollout started, µs since the Unix epoch (UTC). The start, not the end: the
    /// window it falls in is the first counted as the new version's.
    pub at_us: i64,
    /// The version it replaces, when known.
    pub previous_version: Option<String>,
}

/// The versions each service runs over event time, from [`DeploymentEvent`]s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Per service: (start µs, version), by start; and the version before the first.
    services: BTreeMap<String, (Vec<(i64, String)>, String)>,
}

impl Timeline {
    /// The timeline of `events` (any order; of two events of a service at the same µs, the
    /// later in `events` wins).
    pub fn new(events: &[DeploymentEvent]) -> Self {
        let mut by: BTreeMap<&str, Vec<&DeploymentEvent>> = BTreeMap::new();
        for e in events {
            by.entry(&e.service).or_default().push(e);
        }
        let services = by
            .into_iter()
            .map(|(svc, mut es)| {
                es.sort_by_key(|e| e.at_us); // stable: the later of equal times last
                let before = es[0]
                    .previous_version
                    .clone()
                    .unwrap_or_else(|| PREVIOUS.to_owned());
                let steps = es.iter().map(|e| (e.at_us, e.version.clone())).collect();
                (svc.to_owned(), (steps, before))
            })
            .collect();
        Timeline { services }
    }

    /// The version `service` runs in the window ending at `end_us` (the last event starting
    /// before it), `None` for a service with no event.
    pub fn version_in(&self, service: &str, end_us: i64) -> Option<&str> {
        let (steps, before) = self.services.get(service)?;
        let i = steps.partition_point(|(at, _)| *at < end_us);
        Some(if i == 0 { before } else { &steps[i - 1].1 })
    }
}

/// The validated `[detect.deploy]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploySpec {
    watch_us: i64,
    max_p: f64,
    latency_factor: f64,
    pattern_factor: f64,
    min_requests: u64,
    timeline: Arc<Timeline>,
    /// The deployments `timeline` was built from.
    events: Arc<Vec<DeploymentEvent>>,
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
            timeline: Arc::default(),
            events: Arc::default(),
        })
    }

    /// The deploy history (see [the module docs](self)); replaces any before.
    pub fn set_deployments(&mut self, events: &[DeploymentEvent]) {
        self.events = Arc::new(events.to_vec());
        self.timeline = Arc::new(Timeline::new(events));
    }

    /// Adds deployments learned while running (`run` reading a deployments topic) to the
    /// history; returns how many were new. An event equal to one already known, field by
    /// field, is not added again (a topic read again from its start after a restart). It
    /// counts from the next window judged: windows judged before it arrived stay as they were.
    pub fn add_deployments(&mut self, new: &[DeploymentEvent]) -> usize {
        let mut events = self.events.as_ref().clone();
        let before = events.len();
        let mut known: std::collections::HashSet<&DeploymentEvent> = self.events.iter().collect();
        for e in new {
            if known.insert(e) {
                events.push(e.clone());
            }
        }
        let added = events.len() - before;
        if added > 0 {
            self.timeline = Arc::new(Timeline::new(&events));
            self.events = Arc::new(events);
        }
        added
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
    /// Mean latency of requests it received, µs (EWMA over about [`LATENCY_MEMORY`] requests).
    latency_us: f64,
    /// Variance of one request's latency, µs² (EWMA of `timed` × (window mean − mean)²: a
    /// window's mean of n requests varies by σ² ÷ n).
    #[serde(default)]
    latency_var: f64,
}

/// A new version being watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Watch {
    version: String,
    previous: String,
    since_us: i64,
    /// The new version's mean latency in each watched window it was timed in, µs.
    #[serde(default)]
    means_us: Vec<f64>,
    /// The new version's timed requests since the watch began, and their durations (µs).
    #[serde(default)]
    timed: u64,
    #[serde(default)]
    duration_sum_us: u64,
    /// The previous version's timed requests and their durations (µs) in the watched windows
    /// (side by side while both run).
    #[serde(default)]
    previous_timed: u64,
    #[serde(default)]
    previous_duration_sum_us: u64,
    /// The same sums per zone of the service (the records' destination zone), but the new
    /// version's durations, for a side-by-side comparison within zones.
    #[serde(default)]
    zones: BTreeMap<String, ZoneSums>,
}

/// One zone over a watch: the new version's timed requests, and the previous version's timed
/// requests and their durations (µs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ZoneSums {
    timed: u64,
    previous_timed: u64,
    previous_duration_sum_us: u64,
}

/// The previous version's mean latency side by side with the new one, µs, within zones: each
/// zone's previous mean weighted by the new version's timed requests there (a rollout starts in
/// one zone, and zones differ: a slower zone must not make the new version look slower).
/// Over the zones both versions were timed in, when those hold at least `min` of the previous
/// version's requests and half of the new one's; `None` otherwise.
fn side_by_side_in_zones(zones: &BTreeMap<String, ZoneSums>, min: u64) -> Option<f64> {
    let (mut weight, mut sum, mut previous, mut all) = (0u64, 0.0, 0u64, 0u64);
    for z in zones.values() {
        all += z.timed;
        if z.timed == 0 || z.previous_timed == 0 {
            continue;
        }
        weight += z.timed;
        previous += z.previous_timed;
        sum += z.timed as f64 * (z.previous_duration_sum_us as f64 / z.previous_timed as f64);
    }
    (previous >= min && 2 * weight >= all && weight > 0).then(|| sum / weight as f64)
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
    /// Timed requests and their durations (µs) by the zone that received them.
    zones: BTreeMap<&'a str, (u64, u64)>,
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

/// Per (service, version): its traffic in the window ending at `end_us`, from the pairs'
/// breakdowns; traffic without a version goes to the version `timeline` says ran then (only
/// for services it has events of; the part of a pair no breakdown covers, records with no
/// zone or version at all, counts requests but not their latency).
fn traffic<'a>(
    pairs: &'a [PairWindow],
    timeline: &'a Timeline,
    end_us: i64,
) -> BTreeMap<(&'a str, &'a str), Traffic<'a>> {
    let mut t: BTreeMap<(&str, &str), Traffic<'_>> = BTreeMap::new();
    for p in pairs {
        if !is_service(&p.source) || !is_service(&p.destination) {
            continue;
        }
        let dst_from = timeline.version_in(&p.destination, end_us);
        let src_from = timeline.version_in(&p.source, end_us);
        let mut covered = 0;
        for b in &p.breakdown {
            covered += b.requests;
            if let Some(v) = b.destination_version.as_deref().or(dst_from) {
                let e = t.entry((&p.destination, v)).or_default();
                e.received += b.requests;
                e.timed += b.timed;
                e.duration_sum_us = e.duration_sum_us.saturating_add(b.duration_sum_us);
                if let Some(z) = &b.destination_zone {
                    let zs = e.zones.entry(z).or_default();
                    zs.0 += b.timed;
                    zs.1 = zs.1.saturating_add(b.duration_sum_us);
                }
            }
            if let Some(v) = b.source_version.as_deref().or(src_from) {
                *t.entry((&p.source, v))
                    .or_default()
                    .calls
                    .entry(&p.destination)
                    .or_default() += b.requests;
            }
        }
        let rest = p.requests.saturating_sub(covered);
        if rest > 0 {
            if let Some(v) = dst_from {
                t.entry((&p.destination, v)).or_default().received += rest;
            }
            if let Some(v) = src_from {
                *t.entry((&p.source, v))
                    .or_default()
                    .calls
                    .entry(&p.destination)
                    .or_default() += rest;
            }
        }
    }
    t
}

/// How calls per request changed from `before` to this window's `calls` (per destination) in
/// `received` requests: (destination, now, before), for destinations that moved by `factor`
/// either way, or appeared or vanished (crossed [`MIN_CALLS_PER_REQUEST`]), **and** whose
/// count is improbable under the old pattern: P(X ≥ calls) (a rise) or P(X ≤ calls) (a fall)
/// at most `max_p`, for X ~ Poisson(before × received), `before` floored at a tenth of
/// [`MIN_CALLS_PER_REQUEST`] (`statrs`). Counts per request vary less than Poisson's when a
/// call is made a fixed number of times, so the test is conservative; it keeps a handful of
/// requests from looking like a new pattern (0.17 → 0.08 calls per request is 5 calls → 2).
fn pattern_changes(
    before: &BTreeMap<String, f64>,
    calls: &BTreeMap<&str, u64>,
    received: u64,
    factor: f64,
    max_p: f64,
) -> Vec<(String, f64, f64)> {
    let names: BTreeSet<&str> = before
        .keys()
        .map(String::as_str)
        .chain(calls.keys().copied())
        .collect();
    let n = received.max(1) as f64;
    let mut changes = Vec::new();
    for d in names {
        let a = before.get(d).copied().unwrap_or(0.0);
        let count = calls.get(d).copied().unwrap_or(0);
        let b = count as f64 / n;
        if a < MIN_CALLS_PER_REQUEST && b < MIN_CALLS_PER_REQUEST {
            continue;
        }
        let moved = if a < MIN_CALLS_PER_REQUEST || b < MIN_CALLS_PER_REQUEST {
            true
        } else {
            b >= factor * a || b * factor <= a
        };
        if !moved {
            continue;
        }
        let lambda = a.max(MIN_CALLS_PER_REQUEST / 10.0) * n;
        let p = Poisson::new(lambda).map_or(1.0, |x| {
            if b > a {
                x.sf(count.saturating_sub(1))
            } else {
                x.cdf(count)
            }
        });
        if p <= max_p {
            changes.push((d.to_owned(), b, a));
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

    fn add_deployments(&mut self, events: &[DeploymentEvent]) {
        self.spec.add_deployments(events);
    }

    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) {
        let s = self.spec.clone();
        let w = view.window;
        let traffic = traffic(view.pairs, &s.timeline, w.end_us);
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
                    means_us: Vec::new(),
                    timed: 0,
                    duration_sum_us: 0,
                    previous_timed: 0,
                    previous_duration_sum_us: 0,
                    zones: BTreeMap::new(),
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
            let Some(watch) = service.watch.as_mut() else {
                continue;
            };
            if w.start_us.saturating_sub(watch.since_us) > s.watch_us {
                service.watch = None;
                continue;
            }
            let Some(now) = traffic.get(&(svc.as_str(), watch.version.as_str())) else {
                continue;
            };
            if now.timed > 0 {
                watch
                    .means_us
                    .push(now.duration_sum_us as f64 / now.timed as f64);
                watch.timed += now.timed;
                watch.duration_sum_us += now.duration_sum_us;
            }
            if let Some(old) = traffic.get(&(svc.as_str(), watch.previous.as_str())) {
                watch.previous_timed += old.timed;
                watch.previous_duration_sum_us += old.duration_sum_us;
                for (z, (n, d)) in &old.zones {
                    let zs = watch.zones.entry((*z).to_owned()).or_default();
                    zs.previous_timed += n;
                    zs.previous_duration_sum_us = zs.previous_duration_sum_us.saturating_add(*d);
                }
            }
            for (z, (n, _)) in &now.zones {
                watch.zones.entry((*z).to_owned()).or_default().timed += n;
            }
            let watch = watch.clone();
            if now.received < s.min_requests {
                continue;
            }
            let Some(prev) = service.versions.get(&watch.previous) else {
                continue;
            };
            let changes = pattern_changes(
                &prev.calls_per_request,
                &now.calls,
                now.received,
                s.pattern_factor,
                s.max_p,
            );
            // slower than the previous version over the watch: than what it was, and than
            // it is side by side while both run (a slow shared dependency slows both; a
            // short ramp's few requests can be lucky, so not less than it was); the lower median
            // of the windows' means, because one request that hit a pause (a garbage
            // collection, 50–300 ms) doubles the mean of a window of a hundred
            let latency = lower_median(&watch.means_us);
            let reference = if let Some(z) = side_by_side_in_zones(&watch.zones, s.min_requests) {
                z.max(prev.latency_us)
            } else if watch.previous_timed >= s.min_requests {
                let side_by_side =
                    watch.previous_duration_sum_us as f64 / watch.previous_timed as f64;
                side_by_side.max(prev.latency_us)
            } else {
                prev.latency_us
            };
            // and improbably so: the watch's mean against the reference, with the previous
            // version's spread of one request (a coefficient of variation of at least 1:
            // latencies have long tails), normal by the central limit theorem
            let pooled = watch.duration_sum_us as f64 / watch.timed.max(1) as f64;
            let sd = prev.latency_var.max(reference * reference).sqrt();
            let latency_p = if watch.timed == 0 || sd <= 0.0 {
                1.0
            } else {
                let z = (pooled - reference) / (sd / (watch.timed as f64).sqrt());
                Normal::standard().sf(z)
            };
            let slower =
                reference > 0.0 && latency >= s.latency_factor * reference && latency_p <= s.max_p;
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
            // a version that calls as its predecessor did is not to blame for its
            // dependencies: slower with them, it waits on them
            let fires = if changes.is_empty() {
                slower && !downstream_hurt
            } else {
                slower || downstream_hurt
            };
            if !fires {
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
                let mut e = counted("mean_latency_us", latency, reference, "µs");
                e.tail_probability = Some(latency_p);
                evidence.push(e);
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
                    reference / 1e3
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
                if first {
                    v.latency_us = x;
                } else {
                    // weighted by requests, not windows: a quiet service's few requests a
                    // window, with a long tail, give a mean that swings widely; its level and
                    // spread are those of its last LATENCY_MEMORY requests or so
                    let a = (t.timed as f64 / LATENCY_MEMORY).clamp(PATTERN_ALPHA / 10.0, 1.0);
                    let d = x - v.latency_us;
                    v.latency_var += a * (t.timed as f64 * d * d - v.latency_var);
                    v.latency_us += a * d;
                }
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

/// The lower median of `xs` (the smaller middle value of an even count; 0 when empty):
/// with two values, the smaller, so one outlier never makes the median.
fn lower_median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
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
        // 100 requests: cache 100 → 400 calls, db 50 → 60 (within the factor), old 30 → 0,
        // new 0 → 20
        let now = BTreeMap::from([("cache", 400), ("db", 60), ("new", 20)]);
        assert_eq!(
            pattern_changes(&before, &now, 100, 1.5, 1e-4),
            [
                ("cache".to_owned(), 4.0, 1.0),
                ("new".to_owned(), 0.2, 0.0),
                ("old".to_owned(), 0.0, 0.3),
            ]
        );
        let same = BTreeMap::from([("cache", 100), ("db", 50), ("old", 30)]);
        assert!(pattern_changes(&before, &same, 100, 1.5, 1e-4).is_empty());
    }

    fn event(service: &str, version: &str, at_us: i64, previous: Option<&str>) -> DeploymentEvent {
        DeploymentEvent {
            service: service.into(),
            version: version.into(),
            at_us,
            previous_version: previous.map(Into::into),
        }
    }

    #[test]
    fn a_timeline_gives_the_version_running_in_a_window() {
        let t = Timeline::new(&[
            event("cart", "v2", 100, Some("v1")),
            event("pricing", "p2", 50, None),
            event("cart", "v1", 300, Some("v2")), // the rollback
        ]);
        // a window takes the version whose rollout started before its end
        assert_eq!(t.version_in("cart", 100), Some("v1"));
        assert_eq!(t.version_in("cart", 101), Some("v2"));
        assert_eq!(t.version_in("cart", 300), Some("v2"));
        assert_eq!(t.version_in("cart", 301), Some("v1"));
        assert_eq!(t.version_in("pricing", 10), Some(PREVIOUS));
        assert_eq!(t.version_in("pricing", 51), Some("p2"));
        assert_eq!(t.version_in("search", 51), None);
    }

    #[test]
    fn deployments_added_while_running_extend_the_history_once() {
        let mut spec = DeploySpec::new(&DeployConfig::default(), 10_000_000).unwrap();
        spec.set_deployments(&[event("cart", "v2", 100, Some("v1"))]);
        let rollback = event("cart", "v1", 300, Some("v2"));
        let pricing = event("pricing", "p2", 50, None);
        // the file's event again (a topic read from its start) and the rollback twice
        let added = spec.add_deployments(&[
            event("cart", "v2", 100, Some("v1")),
            rollback.clone(),
            rollback,
            pricing,
        ]);
        assert_eq!(added, 2);
        assert_eq!(spec.events.len(), 3);
        assert_eq!(spec.timeline.version_in("cart", 101), Some("v2"));
        assert_eq!(spec.timeline.version_in("cart", 301), Some("v1"));
        assert_eq!(spec.timeline.version_in("pricing", 51), Some("p2"));
        assert_eq!(spec.add_deployments(&[event("pricing", "p2", 50, None)]), 0);
    }

    #[test]
    fn traffic_without_versions_goes_to_the_timelines_version() {
        use crate::signatures::generic::tests::pw;
        use schemas::Breakdown;
        // window 0 ([0, 10 s)); web → cart: 10 requests, 6 with zones but no version (timed:
        // 60 µs), 4 with neither
        let mut p = pw(0, "web", "cart", 10, 0, 100);
        p.breakdown = vec![Breakdown {
            source_zone: Some("a".into()),
            destination_zone: Some("a".into()),
            requests: 6,
            timed: 6,
            duration_sum_us: 60,
            ..Breakdown::default()
        }];
        // cart → cache: 30 calls, 5 of them by a version the records name
        let mut q = pw(0, "cart", "cache", 30, 0, 100);
        q.breakdown = vec![Breakdown {
            source_version: Some("v3".into()),
            requests: 5,
            ..Breakdown::default()
        }];
        let pairs = [p, q];
        let end = 10_000_000;
        let none = Timeline::default();
        let without: Vec<_> = traffic(&pairs, &none, end).into_keys().collect();
        assert_eq!(without, [("cart", "v3")]);
        let t = Timeline::new(&[event("cart", "v2", 5_000_000, Some("v1"))]);
        let got = traffic(&pairs, &t, end);
        let v2 = &got[&("cart", "v2")];
        assert_eq!((v2.received, v2.timed, v2.duration_sum_us), (10, 6, 60));
        assert_eq!(v2.calls.get("cache"), Some(&25));
        // the records' own version wins
        assert_eq!(got[&("cart", "v3")].calls.get("cache"), Some(&5));
        // web has no event: nothing of it
        assert!(!got.keys().any(|(s, _)| *s == "web"));
        // a window that ended before the rollout: the previous version
        assert!(traffic(&pairs, &t, 5_000_000).contains_key(&("cart", "v1")));
    }

    #[test]
    fn side_by_side_compares_within_zones() {
        let z = |timed, previous_timed, previous_mean| ZoneSums {
            timed,
            previous_timed,
            previous_duration_sum_us: previous_timed * previous_mean,
        };
        // the new version runs in zone a only (15 ms, as the previous one there); the
        // previous one is 15 ms in a and 5 ms in b: overall 10 ms, within zones 15 ms
        let zones = BTreeMap::from([
            ("a".to_owned(), z(30, 20, 15_000)),
            ("b".to_owned(), z(0, 20, 5_000)),
        ]);
        assert_eq!(side_by_side_in_zones(&zones, 5), Some(15_000.0));
        // weighted by the new version's requests: 30 in a, 10 in b
        let zones = BTreeMap::from([
            ("a".to_owned(), z(30, 20, 15_000)),
            ("b".to_owned(), z(10, 20, 5_000)),
        ]);
        assert_eq!(side_by_side_in_zones(&zones, 5), Some(12_500.0));
        // too few of the previous version's requests in the shared zones
        assert_eq!(side_by_side_in_zones(&zones, 41), None);
        // most of the new version's requests where the previous one was not timed
        let zones = BTreeMap::from([
            ("a".to_owned(), z(10, 20, 15_000)),
            ("c".to_owned(), z(30, 0, 0)),
        ]);
        assert_eq!(side_by_side_in_zones(&zones, 5), None);
    }

    #[test]
    fn the_lower_median_ignores_one_slow_window() {
        assert_eq!(lower_median(&[]), 0.0);
        // two windows: the smaller, so one paused window (40 ms) is not "most windows"
        assert_eq!(lower_median(&[40_000.0, 2_000.0]), 2_000.0);
        assert_eq!(lower_median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(lower_median(&[4.0, 1.0, 3.0, 2.0]), 2.0);
    }

    #[test]
    fn a_few_calls_are_not_a_new_pattern() {
        let before = BTreeMap::from([("db".to_owned(), 0.17)]);
        // 30 requests: 5.1 calls expected, 2 seen (0.07 per request: "vanished" by the
        // threshold) — P(X ≤ 2) for Poisson(5.1) = 0.116, chance
        let now = BTreeMap::from([("db", 2)]);
        assert!(pattern_changes(&before, &now, 30, 2.0, 1e-4).is_empty());
        // 300 requests, 20 calls against 51 expected: P(X ≤ 20) = 6.7e-7, a change
        let now = BTreeMap::from([("db", 20)]);
        let c = pattern_changes(&before, &now, 300, 2.0, 1e-4);
        assert_eq!(c.len(), 1);
        assert!((c[0].1 - 20.0 / 300.0).abs() < 1e-12);
    }
}
