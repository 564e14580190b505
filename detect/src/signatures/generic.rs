//! Generic per-signal anomalies of a pair, each scored against the pair's adaptive baseline
//! ([`crate::store`]):
//!
//! | signature | fires when (all of) |
//! |---|---|
//! | `rate-spike` | rate ≥ `rate-factor` × expected, P(rate this high) ≤ `max-tail-probability` |
//! | `rate-drop` | expected rate × window ≥ `min-requests`, rate ≤ expected ÷ `rate-factor`, P(this low) ≤ max |
//! | `latency-shift` | requests ≥ `min-requests`; p50 or p99 ≥ `latency-factor` × expected, P ≤ max |
//! | `error-spike` | requests ≥ `min-requests`; error ratio ≥ expected + `min-error-ratio-rise`; P(X ≥ errors) ≤ max for X ~ Binomial(requests, expected ratio) |
//! | `queueing` | concurrency ≥ 2 × expected with P ≤ max while the rate stays within 2 σ of its baseline: requests queue (Little's law, concurrency = rate × latency, so at a flat rate the time in flight grew) |
//!
//! An **open** incident keeps firing while its tail probability is at most
//! `hold-tail-probability` (hysteresis, 1e-3 by default): a rate still 5× up after the first
//! windows is still the incident, so it stays open and its windows teach the baseline nothing
//! (else the baseline would adopt the incident's level, and find the return to normal an
//! anomaly).
//!
//! Evidence: the signal's value, its expected value, unit and tail probability. Subject: the
//! pair. Severity: `warning` (these say "something changed here", the signatures say what).
//!
//! What it can't see: a change smaller than the factors (by design: at 10 s windows tens of
//! thousands of pairs are judged per hour, so only large, improbable changes are reported), a
//! pair too quiet for `min-requests`, anything before a baseline has `confident-after`
//! windows. A window with no
//! request has no latency and no error ratio ("no data"), never a zero.

use schemas::{Finding, PairWindow, Severity, Signature, Subject};
use statrs::distribution::{Binomial, DiscreteCDF};

use crate::adaptive::Score;
use crate::config::AnomalyConfig;
use crate::error::{Error, Result};
use crate::node::is_service;
use crate::signatures::{
    Scope, SignatureDetector, WindowView, confidence, counted, finding, scored,
};
use crate::store::{BaselineStore, Baselines, Signal};
use crate::suite::{factor, tail};

/// The validated `[detect.anomaly]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySpec {
    max_p: f64,
    hold_p: f64,
    min_requests: u64,
    rate_factor: f64,
    latency_factor: f64,
    min_error_ratio_rise: f64,
}

impl TryFrom<&AnomalyConfig> for AnomalySpec {
    type Error = Error;

    fn try_from(c: &AnomalyConfig) -> Result<Self> {
        if !(c.min_error_ratio_rise > 0.0 && c.min_error_ratio_rise <= 1.0) {
            return Err(Error::Config {
                key: "anomaly.min-error-ratio-rise",
                reason: format!("{} is not a ratio in (0, 1]", c.min_error_ratio_rise),
            });
        }
        let max_p = tail(c.max_tail_probability, "anomaly.max-tail-probability")?;
        let hold_p = tail(c.hold_tail_probability, "anomaly.hold-tail-probability")?;
        if hold_p < max_p {
            return Err(Error::Config {
                key: "anomaly.hold-tail-probability",
                reason: format!("{hold_p} is below max-tail-probability {max_p}"),
            });
        }
        Ok(AnomalySpec {
            max_p,
            hold_p,
            min_requests: c.min_requests,
            rate_factor: factor(c.rate_factor, "anomaly.rate-factor")?,
            latency_factor: factor(c.latency_factor, "anomaly.latency-factor")?,
            min_error_ratio_rise: c.min_error_ratio_rise,
        })
    }
}

/// The generic anomaly detector (stateless: its baselines are the shared store's).
#[derive(Debug, Clone)]
pub struct Anomalies {
    spec: AnomalySpec,
}

impl Anomalies {
    /// A detector with `spec`.
    pub fn new(spec: AnomalySpec) -> Self {
        Anomalies { spec }
    }
}

/// A z far enough out to be worth a tail probability (cheap pre-filter: P(T ≥ 4) < 0.001 for
/// any degrees of freedom ≥ 5, far above any sensible `max-tail-probability`).
const WORTH_SCORING: f64 = 4.0;

/// `signal` of `p` scored against its baseline (`baselines`: the pair's, from
/// [`WindowView::pairs_with_baselines`]), when its z is beyond ±[`WORTH_SCORING`].
pub(crate) fn far(
    store: &BaselineStore,
    baselines: Option<&Baselines>,
    p: &PairWindow,
    signal: Signal,
) -> Option<Score> {
    let x = signal.of_pair(p)?;
    let b = baselines?.get(signal)?;
    let spec = store.spec(signal);
    let (_, _, z) = b.z(&spec, p.window.start_us, x)?;
    (z.abs() >= WORTH_SCORING)
        .then(|| b.score(&spec, p.window.start_us, x))
        .flatten()
}

/// [`far`], once the baseline has `confident-after` windows: generic anomalies are judged
/// only against mature baselines (young ones make the signatures' findings, with low
/// confidence, not these).
fn confident_far(
    store: &BaselineStore,
    baselines: Option<&Baselines>,
    p: &PairWindow,
    signal: Signal,
) -> Option<Score> {
    far(store, baselines, p, signal).filter(|s| s.confident)
}

/// P(X ≥ `errors`) for X ~ Binomial(`n`, `ratio`) (statrs), `ratio` floored at 0.1 % so that a
/// pair that never failed is not infinitely surprised by one error.
pub(crate) fn error_tail(n: u64, errors: u64, ratio: f64) -> f64 {
    if errors == 0 {
        return 1.0;
    }
    match Binomial::new(ratio.clamp(0.001, 1.0), n) {
        Ok(b) => b.sf(errors - 1),
        Err(_) => 1.0,
    }
}

impl SignatureDetector for Anomalies {
    fn name(&self) -> &'static str {
        "anomaly"
    }

    fn scope(&self) -> Scope {
        Scope::Pair
    }

    fn judge(&mut self, view: &WindowView<'_>, out: &mut Vec<Finding>) {
        let s = &self.spec;
        let store = view.baselines;
        let secs = view.window.len_secs();
        for (p, baselines) in view.pairs_with_baselines() {
            if !is_service(&p.source) || !is_service(&p.destination) {
                continue;
            }
            let subject = || Subject::Pair {
                source: p.source.clone(),
                destination: p.destination.clone(),
            };
            let emit =
                |out: &mut Vec<Finding>, sig: Signature, ev, scores: &[&Score], what: String| {
                    out.push(finding(
                        sig,
                        subject(),
                        view.window,
                        Severity::Warning,
                        ev,
                        vec![],
                        confidence(scores.iter().copied()),
                        format!("{} -> {}: {what}", p.source, p.destination),
                    ));
                };
            // hysteresis: an open incident keeps firing up to `hold-tail-probability`
            let limit = |sig: Signature| {
                let key = (sig.as_str().to_owned(), subject().key());
                if view.incidents.is_open(&key) {
                    s.hold_p
                } else {
                    s.max_p
                }
            };
            let rate = confident_far(store, baselines, p, Signal::RateRps);
            if let Some(r) = &rate {
                if r.z > 0.0
                    && p.rate_rps >= s.rate_factor * r.expected
                    && r.p_high <= limit(Signature::RateSpike)
                {
                    emit(
                        out,
                        Signature::RateSpike,
                        vec![scored(Signal::RateRps, p.rate_rps, r, true)],
                        &[r],
                        format!(
                            "rate {:.1} req/s, {:.1}× its baseline {:.1} req/s",
                            p.rate_rps,
                            p.rate_rps / r.expected.max(f64::MIN_POSITIVE),
                            r.expected
                        ),
                    );
                } else if r.z < 0.0
                    && r.expected * secs >= s.min_requests as f64
                    && p.rate_rps * s.rate_factor <= r.expected
                    && r.p_low <= limit(Signature::RateDrop)
                {
                    emit(
                        out,
                        Signature::RateDrop,
                        vec![scored(Signal::RateRps, p.rate_rps, r, false)],
                        &[r],
                        format!(
                            "rate fell to {:.1} req/s from a baseline of {:.1} req/s",
                            p.rate_rps, r.expected
                        ),
                    );
                }
            }
            if p.requests < s.min_requests {
                continue;
            }
            let mut latency = Vec::new();
            for signal in [Signal::P50Us, Signal::P99Us] {
                if let (Some(x), Some(sc)) = (
                    signal.of_pair(p),
                    confident_far(store, baselines, p, signal),
                ) && sc.z > 0.0
                    && x >= s.latency_factor * sc.expected
                    && sc.p_high <= limit(Signature::LatencyShift)
                {
                    latency.push((signal, x, sc));
                }
            }
            if !latency.is_empty() {
                let what = latency
                    .iter()
                    .map(|(sig, x, sc)| {
                        format!(
                            "{} {:.1} ms (baseline {:.1} ms)",
                            sig.name(),
                            x / 1e3,
                            sc.expected / 1e3
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let scores: Vec<&Score> = latency.iter().map(|l| &l.2).collect();
                emit(
                    out,
                    Signature::LatencyShift,
                    latency
                        .iter()
                        .map(|(sig, x, sc)| scored(*sig, *x, sc, true))
                        .collect(),
                    &scores,
                    format!("latency shifted: {what}"),
                );
            }
            if let Some(b) = baselines.and_then(|b| b.get(Signal::ErrorRatio)) {
                let spec = store.spec(Signal::ErrorRatio);
                if b.len() >= u64::from(spec.confident_after)
                    && let Some(expected) = b.expected(&spec, p.window.start_us)
                {
                    let expected = expected.clamp(0.0, 1.0);
                    if p.error_ratio >= expected + s.min_error_ratio_rise {
                        let pt = error_tail(p.requests, p.errors, expected);
                        if pt <= limit(Signature::ErrorSpike) {
                            let mut ev = counted(
                                Signal::ErrorRatio.name(),
                                p.error_ratio,
                                expected,
                                "ratio",
                            );
                            ev.tail_probability = Some(pt);
                            let sc = b.score(&spec, p.window.start_us, p.error_ratio);
                            emit(
                                out,
                                Signature::ErrorSpike,
                                vec![ev],
                                &sc.iter().collect::<Vec<_>>(),
                                format!(
                                    "{} of {} requests failed ({:.1} %, baseline {:.1} %)",
                                    p.errors,
                                    p.requests,
                                    100.0 * p.error_ratio,
                                    100.0 * expected
                                ),
                            );
                        }
                    }
                }
            }
            if let Some(c) = confident_far(store, baselines, p, Signal::ConcurrencyMean)
                && c.z > 0.0
                && p.concurrency_mean >= 2.0 * c.expected
                && c.p_high <= limit(Signature::Queueing)
                && let Some(b) = baselines.and_then(|b| b.get(Signal::RateRps))
                && let Some((_, _, zr)) =
                    b.z(&store.spec(Signal::RateRps), p.window.start_us, p.rate_rps)
                && zr.abs() < 2.0
            {
                emit(
                    out,
                    Signature::Queueing,
                    vec![scored(
                        Signal::ConcurrencyMean,
                        p.concurrency_mean,
                        &c,
                        true,
                    )],
                    &[&c],
                    format!(
                        "{:.1} requests in flight (baseline {:.1}) at a steady rate of {:.1} \
                         req/s: requests queue",
                        p.concurrency_mean, c.expected, p.rate_rps
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use schemas::{Latency, SCHEMA_VERSION, Window};

    use super::*;
    use crate::adaptive::BaselineSpec;

    pub(crate) fn pw(
        k: i64,
        src: &str,
        dst: &str,
        requests: u64,
        errors: u64,
        p99: u64,
    ) -> PairWindow {
        PairWindow {
            schema_version: SCHEMA_VERSION,
            kind: "pair-window".into(),
            window: Window {
                start_us: k * 10_000_000,
                end_us: (k + 1) * 10_000_000,
            },
            source: src.into(),
            destination: dst.into(),
            requests,
            rate_rps: requests as f64 / 10.0,
            errors,
            error_ratio: errors as f64 / requests.max(1) as f64,
            latency: Some(Latency {
                p50_us: p99 / 4,
                p90_us: p99 / 2,
                p99_us: p99,
                max_us: p99,
            }),
            concurrency_mean: 1.0,
            concurrency_peak: 2,
            bytes_in: 0,
            bytes_out: 0,
            bandwidth_in_bps: 0.0,
            bandwidth_out_bps: 0.0,
            breakdown: vec![],
            breakdown_overflow: 0,
        }
    }

    fn run(store: &BaselineStore, p: &PairWindow) -> Vec<Finding> {
        run_with(store, p, &crate::incident::Incidents::default())
    }

    fn run_with(
        store: &BaselineStore,
        p: &PairWindow,
        incidents: &crate::incident::Incidents,
    ) -> Vec<Finding> {
        let mut d = Anomalies::new(AnomalySpec::try_from(&AnomalyConfig::default()).unwrap());
        let mut out = Vec::new();
        d.judge(
            &WindowView::new(
                p.window,
                std::slice::from_ref(p),
                &[],
                &[],
                store,
                incidents,
            ),
            &mut out,
        );
        out
    }

    #[test]
    fn a_latency_shift_and_an_error_spike_are_found_and_normal_noise_is_not() {
        let mut store = BaselineStore::new(BaselineSpec {
            warm_up: 12,
            ..BaselineSpec::default()
        });
        // 30 windows of 200 requests, 1 % errors, p99 between 40 and 48 ms
        for k in 0..30 {
            store.learn_pair(&pw(
                k,
                "web",
                "api",
                200,
                2,
                40_000 + (k as u64 % 5) * 2_000,
            ));
        }
        assert!(run(&store, &pw(30, "web", "api", 200, 3, 47_000)).is_empty());
        let f = run(&store, &pw(30, "web", "api", 200, 40, 160_000));
        let sigs: Vec<Signature> = f.iter().map(|f| f.signature).collect();
        assert_eq!(sigs, [Signature::LatencyShift, Signature::ErrorSpike]);
        assert_eq!(f[0].subject.key(), "pair/web/api");
        let p99 = f[0].evidence.iter().find(|e| e.signal == "p99_us").unwrap();
        assert_eq!((p99.value, p99.unit.as_str()), (160_000.0, "µs"));
        // warm-up median 43 ms, then the EWMA of 40..48 ms
        assert!(
            (42_000.0..=46_000.0).contains(&p99.baseline),
            "{}",
            p99.baseline
        );
        // P(X ≥ 40) for X ~ Binomial(200, 0.01): about 1e-22
        let e = &f[1].evidence[0];
        assert_eq!((e.value, e.baseline), (0.2, 0.01));
        assert!(e.tail_probability.unwrap() < 1e-20);
        assert!(f[1].score > 0.999_999);
        assert_eq!(f[1].id, "error-spike/pair/web/api/300000000");
    }

    /// A rise improbable at 1e-3 but not at 1e-6 opens nothing, and keeps an open incident
    /// firing (hysteresis).
    #[test]
    fn an_open_incident_keeps_firing_at_the_hold_probability() {
        let mut store = BaselineStore::new(BaselineSpec::default());
        // 70 windows (confident after 60) at 6, 10 and 14 req/s
        for k in 0..70 {
            store.learn_pair(&pw(k, "web", "api", 60 + (k as u64 % 3) * 40, 0, 40_000));
        }
        // the smallest rate ≥ 3× baseline whose P is within (1e-6, 1e-3]
        let p = (300..2_000)
            .map(|n| pw(70, "web", "api", n, 0, 40_000))
            .find(|p| {
                store
                    .score_pair(p, Signal::RateRps)
                    .is_some_and(|s| s.p_high <= 1e-3 && s.p_high > 1e-6)
            })
            .expect("a rate between the two tail probabilities");
        assert!(run(&store, &p).is_empty(), "closed: not improbable enough");
        let mut incidents = crate::incident::Incidents::default();
        let spike = run(&store, &pw(70, "web", "api", 100_000, 0, 40_000));
        assert_eq!(spike[0].signature, Signature::RateSpike);
        let debounce = crate::incident::Debounce {
            open_after: 2,
            of_windows: 3,
            resolve_after: 3,
        };
        incidents.step(spike.clone(), |_| debounce);
        assert!(incidents.step(spike, |_| debounce).len() == 1, "open");
        let f = run_with(&store, &p, &incidents);
        assert_eq!(f.len(), 1, "open: still firing");
        assert_eq!(f[0].signature, Signature::RateSpike);
        assert_eq!(f[0].subject.key(), "pair/web/api");
    }

    #[test]
    fn error_tail_is_the_binomial_upper_tail() {
        // P(X ≥ 1) for X ~ Binomial(10, 0.1) = 1 − 0.9^10
        assert!((error_tail(10, 1, 0.1) - (1.0 - 0.9f64.powi(10))).abs() < 1e-12);
        assert_eq!(error_tail(10, 0, 0.1), 1.0);
    }
}
