//! Adaptive baselines of one signal: a robust level and spread that follow the signal, and a
//! score with a probabilistic meaning.
//!
//! A [`SignalBaseline`] learns one number per window (a pair's rate, a node's p99 latency …):
//!
//! * **warm-up**: the first [`BaselineSpec::warm_up`] values are kept; then the level starts as
//!   their median and the spread as their median absolute deviation (MAD), both from `statrs`;
//! * **tracking**: each later value moves the level and the spread by an exponentially weighted
//!   step (weight α = 1 − 2^(−1/half-life)) of its residual, clipped at
//!   [`BaselineSpec::clip`] spreads (a Huber step: one wild value moves the baseline by at most
//!   α × clip spreads, so the baseline is a robust EWMA of median and MAD);
//! * **seasonality** (optional): a level offset per slot of a period (e.g. 24 one-hour slots
//!   of a day), learned from the residuals the same way, used once the slot has seen
//!   [`BaselineSpec::warm_up`] values;
//! * **score**: the residual in spreads, `z = (x − level) ÷ σ` with σ = 1.4826 × MAD (the
//!   normal-consistent MAD, floored by [`BaselineSpec::min_spread`] and
//!   [`BaselineSpec::relative_spread_floor`] × |level|), and its one-sided tail probabilities
//!   under a Student's t distribution with `min(n − 1, 30)` degrees of freedom (`statrs`):
//!   `p_high = P(T ≥ z)`, `p_low = P(T ≤ z)`. A young baseline has fatter tails.
//!
//! Only the caller decides what is learned: it scores a window, then calls
//! [`SignalBaseline::learn`] only when the window was healthy. Windows with no data are not
//! given to the baseline at all (no value is not a zero).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::statistics::{Data, Median};

/// How a [`SignalBaseline`] learns and scores (the `[detect.baseline]` section, per signal
/// floors given by the detectors).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineSpec {
    /// Values before the baseline scores anything (windows).
    pub warm_up: u32,
    /// Values after which findings on this baseline are of normal confidence (windows).
    pub confident_after: u32,
    /// Half-life of a value's weight in the level and spread, in values (windows).
    pub half_life: f64,
    /// Residuals are clipped at this many spreads before they move the baseline.
    pub clip: f64,
    /// Smallest σ, in the signal's unit (e.g. 1 req/s, 1 000 µs): a signal that never moved
    /// does not make every small change infinitely unlikely.
    pub min_spread: f64,
    /// Smallest σ as a share of the level's magnitude.
    pub relative_spread_floor: f64,
    /// Seasonal period, µs, and slots per period (e.g. one day in 24 slots); `None`: no
    /// seasonality.
    pub season: Option<(i64, u32)>,
}

impl Default for BaselineSpec {
    fn default() -> Self {
        BaselineSpec {
            warm_up: 6,
            confident_after: 30,
            half_life: 60.0,
            clip: 3.0,
            min_spread: 0.0,
            relative_spread_floor: 0.05,
            season: None,
        }
    }
}

impl BaselineSpec {
    /// The same spec with another σ floor in the signal's unit.
    pub fn with_min_spread(self, min_spread: f64) -> Self {
        BaselineSpec { min_spread, ..self }
    }

    fn alpha(&self) -> f64 {
        1.0 - 0.5f64.powf(1.0 / self.half_life.max(1.0))
    }

    fn slot(&self, t_us: i64) -> Option<usize> {
        let (period, slots) = self.season?;
        let period = period.max(1);
        let phase = t_us.rem_euclid(period);
        Some(((phase as i128 * i128::from(slots.max(1))) / i128::from(period)) as usize)
    }
}

/// One value against its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The expected value (level, plus the seasonal offset), in the signal's unit.
    pub expected: f64,
    /// σ, in the signal's unit (normal-consistent MAD, floored).
    pub sigma: f64,
    /// (value − expected) ÷ σ.
    pub z: f64,
    /// P(a value at least this high) under the baseline.
    pub p_high: f64,
    /// P(a value at least this low) under the baseline.
    pub p_low: f64,
    /// Whether the baseline had [`BaselineSpec::confident_after`] values.
    pub confident: bool,
}

impl Score {
    /// The anomaly score in [0, 1] of a rise: 1 − `p_high`.
    pub fn high(&self) -> f64 {
        1.0 - self.p_high
    }

    /// The anomaly score in [0, 1] of a fall: 1 − `p_low`.
    pub fn low(&self) -> f64 {
        1.0 - self.p_low
    }
}

/// Normal-consistent MAD: σ = 1.4826 × MAD for normally distributed values.
const MAD_TO_SIGMA: f64 = 1.4826;

/// The adaptive baseline of one signal (see the [module docs](self)). Plain data (serde), so
/// it is saved with the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalBaseline {
    /// Values learned.
    n: u64,
    /// Values kept during warm-up. (No field skips itself when empty: checkpoints are
    /// positional MessagePack.)
    warm: Vec<f64>,
    /// Robust level (after warm-up).
    level: f64,
    /// Robust MAD (after warm-up), in the signal's unit.
    mad: f64,
    /// Seasonal offsets to the level and the values each slot has seen.
    seasonal: Vec<(f64, u32)>,
}

impl SignalBaseline {
    /// An empty baseline.
    pub fn new() -> Self {
        SignalBaseline::default()
    }

    /// Values learned so far.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether nothing was learned yet.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether the baseline scores values (warm-up done).
    pub fn is_warm(&self, spec: &BaselineSpec) -> bool {
        self.n >= u64::from(spec.warm_up.max(1))
    }

    /// The level at `t_us` (with the seasonal offset), once warm.
    pub fn expected(&self, spec: &BaselineSpec, t_us: i64) -> Option<f64> {
        self.is_warm(spec)
            .then(|| self.level + self.offset(spec, t_us))
    }

    fn offset(&self, spec: &BaselineSpec, t_us: i64) -> f64 {
        match spec.slot(t_us).and_then(|s| self.seasonal.get(s)) {
            Some(&(offset, seen)) if seen >= spec.warm_up => offset,
            _ => 0.0,
        }
    }

    fn sigma(&self, spec: &BaselineSpec, expected: f64) -> f64 {
        (MAD_TO_SIGMA * self.mad)
            .max(spec.min_spread)
            .max(spec.relative_spread_floor * expected.abs())
            .max(f64::MIN_POSITIVE)
    }

    /// `(expected, σ, z)` of `x` at `t_us` without the tail probabilities (cheap: detectors
    /// call [`SignalBaseline::score`] only for values this says are far out); `None` during
    /// warm-up or for a value that is not finite.
    pub fn z(&self, spec: &BaselineSpec, t_us: i64, x: f64) -> Option<(f64, f64, f64)> {
        if !x.is_finite() {
            return None;
        }
        let expected = self.expected(spec, t_us)?;
        let sigma = self.sigma(spec, expected);
        Some((expected, sigma, (x - expected) / sigma))
    }

    /// Scores `x` seen at `t_us` against the baseline; `None` during warm-up or for a value
    /// that is not finite.
    pub fn score(&self, spec: &BaselineSpec, t_us: i64, x: f64) -> Option<Score> {
        if !x.is_finite() {
            return None;
        }
        let expected = self.expected(spec, t_us)?;
        let sigma = self.sigma(spec, expected);
        let z = (x - expected) / sigma;
        let dof = (self.n.saturating_sub(1)).clamp(1, 30) as f64;
        let t = StudentsT::new(0.0, 1.0, dof).expect("valid Student's t");
        Some(Score {
            expected,
            sigma,
            z,
            p_high: t.sf(z),
            p_low: t.cdf(z),
            confident: self.n >= u64::from(spec.confident_after),
        })
    }

    /// Learns `x` seen at `t_us` (call only with values of healthy windows). Values that are
    /// not finite are ignored.
    pub fn learn(&mut self, spec: &BaselineSpec, t_us: i64, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let warm_up = spec.warm_up.max(1) as usize;
        if self.n as usize <= warm_up {
            self.warm.push(x);
            if self.warm.len() == warm_up {
                let level = Data::new(self.warm.clone()).median();
                let deviations: Vec<f64> = self.warm.iter().map(|v| (v - level).abs()).collect();
                self.mad = Data::new(deviations).median();
                self.level = level;
                self.warm = Vec::new();
            }
            return;
        }
        let alpha = spec.alpha();
        let expected = self.level + self.offset(spec, t_us);
        let sigma = self.sigma(spec, expected);
        let limit = spec.clip * sigma;
        let r = (x - expected).clamp(-limit, limit);
        if let Some(slot) = spec.slot(t_us) {
            let slots = spec.season.map_or(0, |(_, s)| s) as usize;
            if self.seasonal.len() < slots {
                self.seasonal.resize(slots, (0.0, 0));
            }
            let (offset, seen) = &mut self.seasonal[slot];
            // the slot's offset learns the residual against the global level
            *offset +=
                alpha * (x - self.level).clamp(*offset - limit, *offset + limit) - alpha * *offset;
            *seen = seen.saturating_add(1);
        }
        self.level += alpha * r;
        // E|r| = MAD for a symmetric distribution: the spread follows |r| with the same weight
        self.mad += alpha * (r.abs() - self.mad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_gives_median_and_mad() {
        let spec = BaselineSpec::default();
        let mut b = SignalBaseline::new();
        for (i, x) in [10.0, 12.0, 11.0, 9.0, 100.0, 10.0].into_iter().enumerate() {
            assert!(b.score(&spec, i as i64, 10.0).is_none(), "warming up");
            b.learn(&spec, i as i64, x);
        }
        // median of 9 10 10 11 12 100 = 10.5; deviations 1.5 0.5 0.5 0.5 1.5 89.5 → MAD 1.0
        let s = b.score(&spec, 6, 10.5).unwrap();
        assert_eq!(s.expected, 10.5);
        assert!((s.sigma - 1.4826).abs() < 1e-12);
        assert_eq!(s.z, 0.0);
        assert!((s.p_high - 0.5).abs() < 1e-12);
        assert!(!s.confident);
        // 5 σ above with 5 degrees of freedom: P(T ≥ 5) = 0.00205 (t table)
        let s = b.score(&spec, 6, 10.5 + 5.0 * 1.4826).unwrap();
        assert!((s.p_high - 0.002_052).abs() < 1e-5, "{}", s.p_high);
    }

    #[test]
    fn one_wild_value_moves_the_level_by_at_most_alpha_clip_sigmas() {
        let spec = BaselineSpec::default();
        let mut b = SignalBaseline::new();
        for i in 0..6 {
            b.learn(&spec, i, 100.0 + (i % 2) as f64 * 2.0);
        }
        let before = b.expected(&spec, 6).unwrap();
        let sigma = b.score(&spec, 6, before).unwrap().sigma;
        b.learn(&spec, 6, 1e9);
        let moved = b.expected(&spec, 7).unwrap() - before;
        assert!(moved > 0.0 && moved <= spec.alpha() * spec.clip * sigma + 1e-9);
    }
}
