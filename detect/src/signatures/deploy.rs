//! Deployment regressions with a fan-out change: a new version of a service appears, and
//! after it latency or errors rise downstream of it.
//!
//! Versions come from the records (`destination_version` of requests a service receives,
//! `source_version` of the calls it makes), through the pairs' zone/version breakdowns. Per
//! service and version the detector learns the **call pattern**: calls per request to each
//! destination (requests `S@v → D` ÷ requests received by `S@v`, both summed over the windows
//! it was seen in with decaying weights: a memory of about 200 requests, or 10 windows when
//! busier) and the mean latency of requests to `S@v`.
//!
//! A version of a service seen for at least 30 windows that was never seen before starts a
//! **watch** of `watch` (10 min). In each watched window it fires on `version/<S>/<v>`:
//!
//! ```text
//!  critical:  (the call pattern changed  ∧  (downstream pairs slower or failing in two windows
//!                                           in a row  ∨  S@v slower))
//!           ∨ (the same call pattern  ∧  S@v slower in two judged windows in a row
//!                                    ∧  no downstream pair slower or failing)
//!  warning:    the call pattern changed in calls made per request, no harm seen yet
//! ```
//!
//! The warning names a fan-out change as soon as its count of calls is improbable, before the
//! harm it may cause shows (a cache thrashed slowly); the incident turns critical when the
//! harm follows. A change that was meant (a new feature calling a new service) stays a warning
//! (the default quarantine policy acts once its incident is critical, `min-severity`). A
//! destination either version called where it received nothing (a window, or a zone, without
//! requests, when the records name every request's zone; more than 5 % of its calls) is
//! called per instance (log shipping, health checks): its calls per request move with the
//! load, and it is not part of the pattern.
//!
//! Where *downstream* pairs are the pairs into S's destinations and their destinations (two
//! hops, whoever calls them: a shared cache the new version thrashes slows everyone's calls),
//! *slower or failing* is a p99 at least `latency-factor` × its baseline with P ≤
//! `max-tail-probability`, or an error ratio whose binomial tail is that improbable, and the
//! pattern *changed* when calls per request to a destination moved by `pattern-factor` (either
//! way) or a destination with at least 0.1 calls per request appeared or vanished, with a
//! count of calls that improbable if both versions called at one rate (the conditional test
//! of two Poisson rates: the new version's share of both versions' calls, binomial; both
//! counts divided by the previous version's dispersion φ of calls to that destination, so that
//! calls made in clumps — ten on a cache miss, none on a hit — count as the fewer independent
//! ones they are, quasi-Poisson: see `Dispersion`). The
//! pattern is judged on the calls and requests summed since the watch began (once they reach
//! `min-requests`: the first windows of a rollout get a few requests each), the version's own
//! latency only in windows where it received `min-requests`.
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
//! A deployment that changes neither the call pattern nor the latency gives nothing, whatever
//! happens elsewhere.
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
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};

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

/// Largest weight of a window in a version's call pattern (see [`PATTERN_MEMORY`]), and the
/// least, ÷ 10, in its mean latency (see [`LATENCY_MEMORY`]).
const PATTERN_ALPHA: f64 = 0.1;

/// Requests a version's call pattern remembers, about: each window's weight in the decayed
/// sums of requests and calls is its requests ÷ this, between a tenth of [`PATTERN_ALPHA`] and
/// [`PATTERN_ALPHA`]. Sums, not a mean of each window's calls per request: a call made per
/// instance and not per request (log shipping, health checks) would give a quiet service's
/// busy windows fewer calls per request, and a mean over the windows busy enough to judge
/// would be biased low.
const PATTERN_MEMORY: f64 = 200.0;

/// Requests a version's mean latency and its spread remember (the weight of a window in their
/// EWMA is its timed requests ÷ this, at least a hundredth).
const LATENCY_MEMORY: f64 = 1_000.0;

/// Share of a destination's calls made where no request was received above which it is
/// called per instance (log shipping, health checks), not per request: its calls per request
/// move with the load, and its change alone is not a warning. A request-driven call lands in
/// a window without requests only across a window's edge (a few ms of 10 s).
const MAX_IDLE_SHARE: f64 = 0.05;

/// Weight kept by a version's dispersion statistics each window it is seen in (a memory of
/// about 50 windows).
const DISPERSION_KEEP: f64 = 0.98;

/// Windows (decayed) of a version's calls to a destination before their dispersion is used.
const DISPERSION_WINDOWS: f64 = 5.0;

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
    /// Requests received, a decayed sum over every window the version was seen in (see
    /// [`PATTERN_MEMORY`]).
    #[serde(default)]
    received_sum: f64,
    /// Calls made to each destination, decayed sums with `received_sum` (calls per request:
    /// `calls_sum ÷ received_sum`).
    #[serde(default)]
    calls_sum: BTreeMap<String, f64>,
    /// Of `calls_sum`, the calls made in a zone and window where the version received no
    /// request (decayed alike): calls made per instance, not per request.
    #[serde(default)]
    idle_calls_sum: BTreeMap<String, f64>,
    /// How much more its calls to each destination vary from window to window than a
    /// Poisson count would (see [`Dispersion`]).
    #[serde(default)]
    dispersion: BTreeMap<String, Dispersion>,
    /// Mean latency of requests it received, µs (EWMA over about [`LATENCY_MEMORY`] requests).
    latency_us: f64,
    /// Variance of one request's latency, µs² (EWMA of `timed` × (window mean − mean)²: a
    /// window's mean of n requests varies by σ² ÷ n).
    #[serde(default)]
    latency_var: f64,
}

/// The dispersion of a version's calls to one destination: a window's calls `c`, given its
/// requests `r` and the version's calls per request `μ` before it, are Poisson with mean
/// `μr` when each request calls independently, and vary φ times more when calls come in
/// clumps (a request that misses a cache calls it ten times, or not at all). φ is Pearson's
/// χ² over the windows ÷ their number, `Σ (c − μr)² ÷ μr ÷ n`, both sums decayed by
/// [`DISPERSION_KEEP`] per window (the quasi-Poisson estimate, McCullagh & Nelder,
/// *Generalized Linear Models*, 2nd ed., §4.5); the pattern test divides both versions' counts
/// by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Dispersion {
    /// Decayed sum of the windows' Pearson residuals squared.
    pearson: f64,
    /// Decayed count of the windows.
    windows: f64,
}

impl Dispersion {
    /// Adds a window of `calls` where the pattern expected `expected` (> 0).
    fn add(&mut self, calls: f64, expected: f64) {
        self.pearson = DISPERSION_KEEP * self.pearson + (calls - expected).powi(2) / expected;
        self.windows = DISPERSION_KEEP * self.windows + 1.0;
    }

    /// φ, at least 1 (calls as regular as Poisson or more are tested as Poisson), and 1 until
    /// [`DISPERSION_WINDOWS`] windows were seen.
    fn factor(&self) -> f64 {
        if self.windows < DISPERSION_WINDOWS {
            1.0
        } else {
            (self.pearson / self.windows).max(1.0)
        }
    }
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
    /// Requests the new version received since the watch began, count.
    #[serde(default)]
    received: u64,
    /// Calls the new version made to each destination since the watch began, count.
    #[serde(default)]
    calls: BTreeMap<String, u64>,
    /// Judged windows in a row in which the new version was slower.
    #[serde(default)]
    slower_run: u32,
    /// Windows in a row in which pairs downstream of it were slower or failing.
    #[serde(default)]
    hurt_run: u32,
    /// Of `calls`, those made in a window, or a zone, where it received nothing.
    #[serde(default)]
    idle_calls: BTreeMap<String, u64>,
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
    /// Requests received by zone (the records that name it).
    zone_received: BTreeMap<&'a str, u64>,
    /// Calls made by zone (the caller's, when the records name it), per destination.
    zone_calls: BTreeMap<&'a str, BTreeMap<&'a str, u64>>,
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
                    *e.zone_received.entry(z).or_default() += b.requests;
                }
            }
            if let Some(v) = b.source_version.as_deref().or(src_from) {
                let e = t.entry((&p.source, v)).or_default();
                *e.calls.entry(&p.destination).or_default() += b.requests;
                if let Some(z) = &b.source_zone {
                    *e.zone_calls
                        .entry(z)
                        .or_default()
                        .entry(&p.destination)
                        .or_default() += b.requests;
                }
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

/// A version's calls in `t` made where it received nothing: in a window without requests, or
/// by a zone that received none in it, when the records name the zone of every request
/// received (per destination).
fn idle_calls<'a>(t: &Traffic<'a>) -> BTreeMap<&'a str, u64> {
    if t.received == 0 {
        return t.calls.clone();
    }
    let mut idle: BTreeMap<&str, u64> = BTreeMap::new();
    // by zone only when the zones account for every request received
    if t.zone_received.values().sum::<u64>() < t.received {
        return idle;
    }
    for (z, calls) in &t.zone_calls {
        if t.zone_received.get(z).copied().unwrap_or(0) == 0 {
            for (d, n) in calls {
                *idle.entry(*d).or_default() += n;
            }
        }
    }
    idle
}

/// How calls per request changed from the previous version's (`before_calls` per destination
/// in `before_requests` requests, decayed sums) to `calls` (per destination) in `received`
/// requests: (destination, calls per request now, before), for destinations that moved by `factor` either way, the larger rate at least
/// [`MIN_CALLS_PER_REQUEST`] (a destination appeared or vanished when the other is below it),
/// **and** whose count is improbable if both versions
/// called at one rate: the conditional test of two Poisson rates (Przyborowski & Wilenski
/// 1940), X ~ Binomial(calls before + calls now, received ÷ (received + before_requests)),
/// P(X ≥ calls now) for a rise, P(X ≤ calls now) for a fall, at most `max_p` (`statrs`). It
/// weighs the uncertainty of both patterns: a quiet predecessor's few requests are not a
/// precise pattern. Counts per request vary less than Poisson's when a call is made a fixed
/// number of times, so the test is conservative; it keeps a handful of requests from looking
/// like a new pattern (0.17 → 0.07 calls per request is 5 calls → 2).
fn pattern_changes(
    before_calls: &BTreeMap<String, f64>,
    before_requests: f64,
    dispersion: &BTreeMap<String, Dispersion>,
    calls: &BTreeMap<String, u64>,
    received: u64,
    factor: f64,
    max_p: f64,
) -> Vec<(String, f64, f64)> {
    let names: BTreeSet<&String> = before_calls.keys().chain(calls.keys()).collect();
    let n = received.max(1) as f64;
    let share = n / (n + before_requests.max(0.0));
    let mut changes = Vec::new();
    for d in names {
        let called = before_calls.get(d).copied().unwrap_or(0.0);
        let a = if before_requests > 0.0 {
            called / before_requests
        } else {
            0.0
        };
        let count = calls.get(d).copied().unwrap_or(0);
        let b = count as f64 / n;
        if a < MIN_CALLS_PER_REQUEST && b < MIN_CALLS_PER_REQUEST {
            continue;
        }
        let moved = (b >= MIN_CALLS_PER_REQUEST && b >= factor * a)
            || (a >= MIN_CALLS_PER_REQUEST && b * factor <= a);
        if !moved {
            continue;
        }
        // clumped calls count for fewer independent ones (quasi-Poisson)
        let phi = dispersion.get(d).map_or(1.0, Dispersion::factor);
        let (count, called) = ((count as f64 / phi).round() as u64, called / phi);
        let total = count + called.round() as u64;
        let p = Binomial::new(share, total).map_or(1.0, |x| {
            if b > a {
                x.sf(count.saturating_sub(1))
            } else {
                x.cdf(count)
            }
        });
        if p <= max_p {
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
                    received: 0,
                    calls: BTreeMap::new(),
                    slower_run: 0,
                    hurt_run: 0,
                    idle_calls: BTreeMap::new(),
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
            watch.received += now.received;
            for (d, n) in &now.calls {
                *watch.calls.entry((*d).to_owned()).or_default() += n;
            }
            for (d, n) in idle_calls(now) {
                *watch.idle_calls.entry(d.to_owned()).or_default() += n;
            }
            let watch = watch.clone();
            // the call pattern is judged on the watch's pooled counts (the first windows of a
            // rollout get a few requests each); the latency on windows of min-requests
            let judged = now.received >= s.min_requests;
            if watch.received < s.min_requests || now.received == 0 {
                if let Some(w) = service.watch.as_mut() {
                    (w.slower_run, w.hurt_run) = (0, 0);
                }
                continue;
            }
            let Some(prev) = service.versions.get(&watch.previous) else {
                continue;
            };
            let mut changes = pattern_changes(
                &prev.calls_sum,
                prev.received_sum,
                &prev.dispersion,
                &watch.calls,
                watch.received,
                s.pattern_factor,
                s.max_p,
            );
            // calls made per request, not per instance, by either version: a destination
            // called where nothing was received is not part of the pattern
            changes.retain(|(d, _, _)| {
                let all = prev.calls_sum.get(d).copied().unwrap_or(0.0);
                let idle = prev.idle_calls_sum.get(d).copied().unwrap_or(0.0);
                let all_new = watch.calls.get(d).copied().unwrap_or(0) as f64;
                let idle_new = watch.idle_calls.get(d).copied().unwrap_or(0) as f64;
                idle <= MAX_IDLE_SHARE * all && idle_new <= MAX_IDLE_SHARE * all_new
            });
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
            let slower = judged
                && reference > 0.0
                && latency >= s.latency_factor * reference
                && latency_p <= s.max_p;
            // in consecutive windows: the latency and its probability are the watch's, so
            // two judged windows far apart would be about the same evidence
            let slower_run = if slower { watch.slower_run + 1 } else { 0 };
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
            for (p, baselines) in view
                .pairs_with_baselines()
                .filter(|(p, _)| downstream.contains(p.destination.as_str()))
            {
                if let (Some(x), Some(sc)) = (
                    Signal::P99Us.of_pair(p),
                    far(view.baselines, baselines, p, Signal::P99Us),
                ) && sc.z > 0.0
                    && x >= s.latency_factor * sc.expected
                    && sc.p_high <= s.max_p
                    && worst.as_ref().is_none_or(|(_, w)| sc.p_high < w.p_high)
                {
                    worst = Some((p, sc));
                }
                if let Some(b) = baselines.and_then(|b| b.get(Signal::ErrorRatio))
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
            let hurt_run = if downstream_hurt {
                watch.hurt_run + 1
            } else {
                0
            };
            if let Some(w) = service.watch.as_mut() {
                w.slower_run = slower_run;
                w.hurt_run = hurt_run;
            }
            // a version that calls as its predecessor did is not to blame for its
            // dependencies: slower with them, it waits on them
            // harm: the version slower, or pairs downstream of it in two windows in a row (a
            // p99 two hops away can blip once)
            let harm = slower || hurt_run >= 2;
            // slower alone (the same call pattern): in two judged windows in a row, as a
            // quiet service's window of a few requests can hit a pause
            let fires = if changes.is_empty() {
                slower && slower_run >= 2 && !downstream_hurt
            } else {
                true
            };
            if !fires {
                continue;
            }
            // a changed call pattern alone is a warning: the regression may be on its way
            // (a cache thrashed slowly), or the change may be meant (a new feature)
            let severity = if harm {
                Severity::Critical
            } else {
                Severity::Warning
            };
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
                None if !slower => "no harm seen yet".to_owned(),
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
                severity,
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
            // the dispersion: the window's calls against the pattern before it (windows with
            // requests: calls made per instance are not part of the pattern)
            if t.received > 0 && v.received_sum > 0.0 {
                for (d, sum) in &v.calls_sum {
                    let expected = sum / v.received_sum * t.received as f64;
                    if expected > 0.0 {
                        let c = t.calls.get(d.as_str()).copied().unwrap_or(0) as f64;
                        v.dispersion.entry(d.clone()).or_default().add(c, expected);
                    }
                }
            }
            // the pattern from every window it was seen in, its latency from those with
            // min-requests
            let keep = 1.0
                - (t.received as f64 / PATTERN_MEMORY).clamp(PATTERN_ALPHA / 10.0, PATTERN_ALPHA);
            v.received_sum = keep * v.received_sum + t.received as f64;
            for x in v.calls_sum.values_mut() {
                *x *= keep;
            }
            for (d, n) in &t.calls {
                *v.calls_sum.entry((*d).to_owned()).or_default() += *n as f64;
            }
            if v.received_sum > 0.0 {
                let received = v.received_sum;
                v.calls_sum
                    .retain(|_, x| *x / received >= MIN_CALLS_PER_REQUEST / 10.0);
            }
            for x in v.idle_calls_sum.values_mut() {
                *x *= keep;
            }
            for (d, n) in idle_calls(t) {
                *v.idle_calls_sum.entry(d.to_owned()).or_default() += n as f64;
            }
            let calls_sum = &v.calls_sum;
            v.idle_calls_sum.retain(|d, _| calls_sum.contains_key(d));
            v.dispersion.retain(|d, _| calls_sum.contains_key(d));
            if t.received < self.spec.min_requests {
                continue;
            }
            let first = v.windows == 0;
            v.windows += 1;
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
        // the services with versions seen in this window, each counted once (its last_seen_us
        // marks it): a lookup per pair end in the few services with versions, none at all
        // when there are none (no set of every name of the window)
        if !self.services.is_empty() {
            let mut seen = |name: &str| {
                if let Some(service) = self.services.get_mut(name)
                    && service.last_seen_us != w.end_us
                {
                    service.windows = service.windows.saturating_add(1);
                    service.last_seen_us = w.end_us;
                }
            };
            let mut source: Option<&str> = None;
            for p in view.pairs {
                // pairs come sorted by source: each source is looked up once
                if source != Some(p.source.as_str()) {
                    seen(&p.source);
                    source = Some(&p.source);
                }
                seen(&p.destination);
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

    /// Decayed sums of calls per destination, as a version keeps them.
    fn sums(calls: &[(&str, f64)]) -> BTreeMap<String, f64> {
        calls.iter().map(|(d, n)| ((*d).to_owned(), *n)).collect()
    }

    /// A watch's calls per destination.
    fn counts(calls: &[(&str, u64)]) -> BTreeMap<String, u64> {
        calls.iter().map(|(d, n)| ((*d).to_owned(), *n)).collect()
    }

    /// [`pattern_changes`] with calls as regular as Poisson (no dispersion learned) and a
    /// tail probability of 1e-4.
    fn poisson_changes(
        before: &BTreeMap<String, f64>,
        before_requests: f64,
        now: &BTreeMap<String, u64>,
        received: u64,
        factor: f64,
    ) -> Vec<(String, f64, f64)> {
        pattern_changes(
            before,
            before_requests,
            &BTreeMap::new(),
            now,
            received,
            factor,
            1e-4,
        )
    }

    #[test]
    fn pattern_changes_list_moved_new_and_vanished_destinations() {
        // 1,000 requests: cache 1, db 0.5, old 0.3 calls per request
        let before = sums(&[("cache", 1_000.0), ("db", 500.0), ("old", 300.0)]);
        // now 100 requests: cache 100 → 400 calls, db 50 → 60 (within the factor), old 30 →
        // 0, new 0 → 20
        let now = counts(&[("cache", 400), ("db", 60), ("new", 20)]);
        assert_eq!(
            poisson_changes(&before, 1_000.0, &now, 100, 1.5),
            [
                ("cache".to_owned(), 4.0, 1.0),
                ("new".to_owned(), 0.2, 0.0),
                ("old".to_owned(), 0.0, 0.3),
            ]
        );
        let same = counts(&[("cache", 100), ("db", 50), ("old", 30)]);
        assert!(poisson_changes(&before, 1_000.0, &same, 100, 1.5).is_empty());
        // 0.12 → 0.09 calls per request crosses 0.1 but moves by less than the factor, however
        // many requests make it certain
        let before = sums(&[("db", 12_000.0)]);
        let now = counts(&[("db", 9_000)]);
        assert!(poisson_changes(&before, 100_000.0, &now, 100_000, 1.5).is_empty());
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

    /// Window `k` of web → cart and cart → cache, with cart's versions `(version, requests,
    /// calls to cache per request, mean latency µs)`; pairs sorted by source.
    fn cart_window(k: i64, versions: &[(&str, u64, u64, u64)]) -> Vec<PairWindow> {
        let calls: Vec<_> = versions
            .iter()
            .map(|&(v, requests, per_request, mean_us)| {
                (v, requests, requests * per_request, mean_us)
            })
            .collect();
        cart_calls_window(k, &calls)
    }

    /// [`cart_window`] with each version's calls to the cache in all, not per request.
    fn cart_calls_window(k: i64, versions: &[(&str, u64, u64, u64)]) -> Vec<PairWindow> {
        use crate::signatures::generic::tests::pw;
        use schemas::Breakdown;
        let received: u64 = versions.iter().map(|v| v.1).sum();
        let calls: u64 = versions.iter().map(|v| v.2).sum();
        let mut into = pw(k, "web", "cart", received, 0, 40_000);
        let mut out = pw(k, "cart", "cache", calls, 0, 2_000);
        for &(version, requests, calls, mean_us) in versions {
            into.breakdown.push(Breakdown {
                destination_version: Some(version.into()),
                requests,
                timed: requests,
                duration_sum_us: requests * mean_us,
                ..Breakdown::default()
            });
            out.breakdown.push(Breakdown {
                source_version: Some(version.into()),
                requests: calls,
                ..Breakdown::default()
            });
        }
        vec![out, into]
    }

    fn judge(d: &mut DeployRegression, pairs: &[PairWindow]) -> Vec<Finding> {
        crate::signatures::judge_pairs(d, pairs)
    }

    /// A detector that saw cart v1 for 40 windows: 20 requests a window, one call to the
    /// cache each, 10 ms.
    fn after_v1() -> DeployRegression {
        let spec = DeploySpec::new(&DeployConfig::default(), 10_000_000).unwrap();
        let mut d = DeployRegression::new(spec);
        for k in 0..40 {
            assert!(judge(&mut d, &cart_window(k, &[("v1", 20, 1, 10_000)])).is_empty());
        }
        d
    }

    #[test]
    fn a_multiplied_fan_out_is_a_warning_from_a_rollouts_first_requests_then_critical_once_slower()
    {
        let mut d = after_v1();
        // v2 starts with 3 requests a window at 50 ms, 3 calls to the cache each: 3 requests
        // are fewer than min-requests (5), nothing yet
        let first = [("v1", 17, 1, 10_000), ("v2", 3, 3, 50_000)];
        assert!(judge(&mut d, &cart_window(40, &first)).is_empty());
        // summed over the watch: 6 requests, 18 calls where about 6 were expected (X ~
        // Binomial(218, 6/206), P(X ≥ 18) = 8.4e-5); the latency is not judged on a window of 3
        let got = judge(&mut d, &cart_window(41, &first));
        assert_eq!(got.len(), 1, "{got:?}");
        let f = &got[0];
        assert_eq!(f.subject.key(), "version/cart/v2");
        assert_eq!(f.severity, Severity::Warning);
        let cache = f.related.iter().find(|r| r.name == "cache").unwrap();
        assert_eq!(cache.role, "destination");
        assert_eq!(cache.score, Some(3.0));
        assert!(f.summary.ends_with("no harm seen yet"), "{}", f.summary);
        // a window of 10 requests at 50 ms, five times v1's: slower in most windows (all
        // three), and the same change
        let slower = [("v1", 10, 1, 10_000), ("v2", 10, 3, 50_000)];
        let got = judge(&mut d, &cart_window(42, &slower));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].severity, Severity::Critical);
    }

    #[test]
    fn a_new_version_calling_in_the_clumps_its_predecessor_did_is_no_warning() {
        // v1 calls the cache 10 times on a miss (one request in ten), not at all on a hit:
        // 20 requests a window, 20 calls on average, from a fixed LCG
        let spec = DeploySpec::new(&DeployConfig::default(), 10_000_000).unwrap();
        let mut d = DeployRegression::new(spec);
        let mut x: u64 = 11;
        let mut misses = |requests: u64| -> u64 {
            (0..requests)
                .filter(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (x >> 33).is_multiple_of(10)
                })
                .count() as u64
        };
        for k in 0..60 {
            let calls = 10 * misses(20);
            assert!(judge(&mut d, &cart_calls_window(k, &[("v1", 20, calls, 10_000)])).is_empty());
        }
        let phi = d.services["cart"].versions["v1"].dispersion["cache"].factor();
        assert!(phi > 4.0, "φ = {phi}");
        // v2's first two windows of 3 requests each missed once: 20 calls for 6 requests, 3.3
        // per request. As independent calls (Poisson) that is a change (P ≈ 1e-5, see the
        // detector that learned steady calls); as the clumps v1 made, chance
        let rollout = |k| cart_calls_window(k, &[("v1", 17, 10, 10_000), ("v2", 3, 10, 10_000)]);
        assert!(judge(&mut d, &rollout(60)).is_empty());
        assert!(judge(&mut d, &rollout(61)).is_empty());
        let mut steady = after_v1();
        assert!(judge(&mut steady, &rollout(40)).is_empty());
        let got = judge(&mut steady, &rollout(41));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].subject.key(), "version/cart/v2");
    }

    #[test]
    fn a_version_slower_alone_is_named_in_its_second_slow_window() {
        let mut d = after_v1();
        // the same pattern, 50 ms against 10 ms: one slow window is not enough
        let slow = [("v1", 10, 1, 10_000), ("v2", 10, 1, 50_000)];
        assert!(judge(&mut d, &cart_window(40, &slow)).is_empty());
        let got = judge(&mut d, &cart_window(41, &slow));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].severity, Severity::Critical);
        assert!(
            got[0].summary.contains("the same call pattern"),
            "{}",
            got[0].summary
        );
    }

    #[test]
    fn calls_made_per_instance_are_no_warning_when_they_change() {
        use crate::signatures::generic::tests::pw;
        use schemas::Breakdown;
        // cart ships logs twice a window whether it receives requests or not
        let window = |k: i64, versions: &[(&str, u64, u64)]| {
            let mut pairs = Vec::new();
            let mut logs = pw(k, "cart", "logs", 0, 0, 1_000);
            let mut into = pw(k, "web", "cart", 0, 0, 40_000);
            for &(version, requests, shipped) in versions {
                logs.requests += shipped;
                logs.breakdown.push(Breakdown {
                    source_version: Some(version.into()),
                    requests: shipped,
                    ..Breakdown::default()
                });
                into.requests += requests;
                into.breakdown.push(Breakdown {
                    destination_version: Some(version.into()),
                    requests,
                    timed: requests,
                    duration_sum_us: requests * 10_000,
                    ..Breakdown::default()
                });
            }
            pairs.push(logs);
            if into.requests > 0 {
                pairs.push(into);
            }
            pairs
        };
        let spec = DeploySpec::new(&DeployConfig::default(), 10_000_000).unwrap();
        let mut d = DeployRegression::new(spec);
        // one window in four without requests: a quarter of its log calls are made idle (a
        // share that fades while it is busy after)
        for k in 0..40 {
            let requests = if k % 4 == 0 { 0 } else { 20 };
            assert!(judge(&mut d, &window(k, &[("v1", requests, 2)])).is_empty());
        }
        // v2's one instance ships logs every window and gets a request every other one: 4
        // calls per request, not 0.13
        for k in 40..60 {
            let w = window(k, &[("v1", 17, 2), ("v2", (k % 2) as u64, 2)]);
            assert!(judge(&mut d, &w).is_empty(), "window {k}");
        }
    }

    #[test]
    fn a_few_requests_with_the_old_pattern_give_nothing() {
        let mut d = after_v1();
        for k in 40..60 {
            let w = cart_window(k, &[("v1", 17, 1, 10_000), ("v2", 3, 1, 10_000)]);
            assert!(judge(&mut d, &w).is_empty(), "window {k}");
        }
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
        let before = sums(&[("db", 170.0)]);
        // learned over 1,000 requests (170 calls); 30 requests, 2 calls (0.07 per request:
        // "vanished" by the threshold): P(X ≤ 2), X ~ Binomial(172, 30/1030) = 0.12, chance
        let now = counts(&[("db", 2)]);
        assert!(poisson_changes(&before, 1_000.0, &now, 30, 2.0).is_empty());
        // 300 requests, 20 calls: P(X ≤ 20), X ~ Binomial(190, 300/1300) = 6.9e-6, a change
        let now = counts(&[("db", 20)]);
        let c = poisson_changes(&before, 1_000.0, &now, 300, 2.0);
        assert_eq!(c.len(), 1);
        assert!((c[0].1 - 20.0 / 300.0).abs() < 1e-12);
    }

    #[test]
    fn clumped_calls_are_tested_as_the_fewer_independent_calls_they_are() {
        // windows of 50 requests, each calling the cache 10 times with probability 0.1 or not
        // at all (1 call per request, 9 times a Poisson count's variance), from a fixed LCG
        let mut x: u64 = 7;
        let mut clumped = Dispersion::default();
        let mut steady = Dispersion::default();
        for _ in 0..200 {
            let mut calls = 0.0;
            for _ in 0..50 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                if (x >> 33).is_multiple_of(10) {
                    calls += 10.0;
                }
            }
            clumped.add(calls, 50.0);
            steady.add(50.0, 50.0);
        }
        let phi = clumped.factor();
        assert!((4.0..20.0).contains(&phi), "φ = {phi}");
        assert_eq!(steady.factor(), 1.0);
        // too few windows to say
        let mut young = Dispersion::default();
        young.add(100.0, 10.0);
        assert_eq!(young.factor(), 1.0);

        // 1,000 requests called the cache 1,000 times; the new version's first 20 requests
        // called it 50 times: P = 2.0e-8 counted as Poisson, P(X ≥ 6), X ~ Binomial(117,
        // 20/1020) = 0.028 with φ = 9 (6 and 111 independent calls): chance
        let before = sums(&[("cache", 1_000.0)]);
        let phi = BTreeMap::from([(
            "cache".to_owned(),
            Dispersion {
                pearson: 90.0,
                windows: 10.0,
            },
        )]);
        let now = counts(&[("cache", 50)]);
        assert_eq!(poisson_changes(&before, 1_000.0, &now, 20, 2.0).len(), 1);
        assert!(pattern_changes(&before, 1_000.0, &phi, &now, 20, 2.0, 1e-4).is_empty());
        // a real fan-out change is still one: 100 requests, 300 calls (33 and 111 independent),
        // P = 5.8e-7
        let now = counts(&[("cache", 300)]);
        assert_eq!(
            pattern_changes(&before, 1_000.0, &phi, &now, 100, 2.0, 1e-4),
            [("cache".to_owned(), 3.0, 1.0)]
        );
    }

    #[test]
    fn a_quiet_predecessors_pattern_is_weighed_as_the_few_requests_it_is() {
        // 0.3 calls per request; 60 requests, no call to db: against 1,000 requests' 300
        // calls, P = (1000/1060)^300 = 2.5e-8; against 10 requests' 3 calls, (10/70)^3 = 2.9e-3
        let now = BTreeMap::new();
        assert_eq!(
            poisson_changes(&sums(&[("db", 300.0)]), 1_000.0, &now, 60, 2.0),
            [("db".to_owned(), 0.0, 0.3)]
        );
        assert!(poisson_changes(&sums(&[("db", 3.0)]), 10.0, &now, 60, 2.0).is_empty());
    }
}
