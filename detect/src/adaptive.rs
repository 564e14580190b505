//! Adaptive baselines of one signal: a robust level and spread that follow the signal, a model
//! of its excursions, and a score with a probabilistic meaning.
//!
//! A [`SignalBaseline`] learns one number per window (a pair's rate, a node's p99 latency …):
//!
//! * **warm-up**: the first [`BaselineSpec::warm_up`] values are kept; then the level starts as
//!   their median and the spread as their median absolute deviation (MAD), both from `statrs`;
//! * **core**: each later value moves the level and the spread by an exponentially weighted
//!   step (weight α = 1 − 2^(−1/half-life)) of its residual, clipped at
//!   [`BaselineSpec::clip`] spreads (a Huber step: one wild value moves the baseline by at most
//!   α × clip spreads, so the baseline is a robust EWMA of median and MAD);
//! * **seasonality** (optional, [`BaselineSpec::season`]): each slot of a period (e.g. 24
//!   one-hour slots of a day) has a level offset, learned from the residuals against the
//!   level, and the largest excursion (see below) it saw above and below — its *reach*, so
//!   that a spike that comes at the same time every day (a nightly job) is expected at that
//!   time and only there. A slot's weights halve every [`BaselineSpec::season_half_life`]
//!   periods; a slot is used once it has seen [`BaselineSpec::warm_up`] values, its reach
//!   together with its neighbours' (a job that starts a little late);
//! * **excursions**: a value more than `clip` spreads above (or below) the expected value is an
//!   excursion. Each side keeps the rate of excursions (an EWMA over
//!   [`BaselineSpec::tail_half_life`] values) and the first two moments of their excess over
//!   the clip line, in the signal's unit (EWMAs over [`BaselineSpec::excess_half_life`]
//!   excursions): a generalized Pareto tail fitted by moments, the peaks-over-threshold model
//!   of extreme value theory (Pickands 1975; on streams, Siffer et al., "Anomaly Detection in
//!   Streams with Extreme Value Theory", KDD 2017). A signal whose spikes are routine learns
//!   that they are; a quiet one keeps a thin tail. The shape ξ is kept in [0.1, 0.5] and
//!   starts at 0.25 with a scale of σ ÷ clip (one prior excursion): tails never lighter than a
//!   power law, so that a huge value is very unlikely but never impossible;
//! * **level shifts**: [`BaselineSpec::shift_after`] excursions in a row on one side are a new
//!   level, not excursions: the level moves to their mean and the shift counts as one
//!   excursion;
//! * **records**: the largest and smallest values seen, drawn back towards the level with a
//!   half-life of [`BaselineSpec::range_half_life`] values. A value beyond that range by more
//!   than [`BaselineSpec::record_margin`] of its width is a record; if the values were
//!   exchangeable, the latest of `n + 1` would be the largest with probability `1 ÷ (n + 1)`
//!   (`n` capped at the range's memory, half-life ÷ ln 2). People who label anomalies mark the
//!   highest value they have seen (NAB's HTM detector scores a value 5 % beyond the range seen
//!   so far as an anomaly for that reason); this gives such a value its probability;
//! * **score**: the residual in spreads, `z = (x − expected) ÷ σ` with σ = 1.4826 × MAD (the
//!   normal-consistent MAD, floored by [`BaselineSpec::min_spread`] and
//!   [`BaselineSpec::relative_spread_floor`] × |expected|), and its one-sided tail
//!   probabilities `p_high = P(X ≥ x)`, `p_low = P(X ≤ x)`: within the clip line (or the
//!   slot's reach), under a Student's t distribution with `min(n − 1, 30)` degrees of freedom
//!   (`statrs`; a young baseline has fatter tails) but never below the side's excursion rate;
//!   beyond it, the excursion rate times the Pareto tail's probability of the excess; for a
//!   record, at most the record's probability.
//!
//! Only the caller decides what is learned: it scores a window, then calls
//! [`SignalBaseline::learn`] with the values it trusts (a baseline that learns no anomalous
//! value never follows a lasting change: it cannot see the level shift). Windows with no data
//! are not given to the baseline at all (no value is not a zero). Scoring and learning are
//! O(1) per value; the state is about 200 bytes, plus 40 bytes per seasonal slot.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::statistics::{Data, Median};

/// How a [`SignalBaseline`] learns and scores (the `[detect.baseline]` section, per signal
/// floors given by the detectors). Fields added after the first version have serde defaults,
/// so older configs and checkpoints still read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineSpec {
    /// Values before the baseline scores anything (windows).
    pub warm_up: u32,
    /// Values after which findings on this baseline are of normal confidence (windows).
    pub confident_after: u32,
    /// Half-life of a value's weight in the level and spread, in values (windows).
    pub half_life: f64,
    /// Residuals are clipped at this many spreads before they move the baseline; values beyond
    /// are excursions.
    pub clip: f64,
    /// Smallest σ, in the signal's unit (e.g. 1 req/s, 1 000 µs): a signal that never moved
    /// does not make every small change infinitely unlikely.
    pub min_spread: f64,
    /// Smallest σ as a share of the level's magnitude.
    pub relative_spread_floor: f64,
    /// Seasonal period, µs, and slots per period (e.g. one day in 24 slots); `None`: no
    /// seasonality.
    pub season: Option<(i64, u32)>,
    /// Half-life of a seasonal slot's offset and reach, in periods.
    #[serde(default = "default_season_half_life")]
    pub season_half_life: f64,
    /// Half-life of the excursion rate, in values (windows).
    #[serde(default = "default_tail_half_life")]
    pub tail_half_life: f64,
    /// Half-life of the excess moments, in excursions.
    #[serde(default = "default_excess_half_life")]
    pub excess_half_life: f64,
    /// Excursions in a row on one side that make a new level (0: never).
    #[serde(default = "default_shift_after")]
    pub shift_after: u32,
    /// Half-life of the range of values seen (records), in values (windows); 0: no records.
    #[serde(default = "default_range_half_life")]
    pub range_half_life: f64,
    /// How far beyond the range a record is, as a share of the range's width.
    #[serde(default = "default_record_margin")]
    pub record_margin: f64,
}

fn default_season_half_life() -> f64 {
    BaselineSpec::default().season_half_life
}

fn default_tail_half_life() -> f64 {
    BaselineSpec::default().tail_half_life
}

fn default_excess_half_life() -> f64 {
    BaselineSpec::default().excess_half_life
}

fn default_shift_after() -> u32 {
    BaselineSpec::default().shift_after
}

fn default_range_half_life() -> f64 {
    BaselineSpec::default().range_half_life
}

fn default_record_margin() -> f64 {
    BaselineSpec::default().record_margin
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
            season_half_life: 16.0,
            tail_half_life: 600.0,
            excess_half_life: 30.0,
            shift_after: 9,
            range_half_life: 30_000.0,
            record_margin: 0.05,
        }
    }
}

/// The weight of a new value in an EWMA whose weights halve every `half_life` values.
fn ewma_alpha(half_life: f64) -> f64 {
    1.0 - 0.5f64.powf(1.0 / half_life.max(1.0))
}

impl BaselineSpec {
    /// The same spec with another σ floor in the signal's unit.
    pub fn with_min_spread(self, min_spread: f64) -> Self {
        BaselineSpec { min_spread, ..self }
    }

    fn alpha(&self) -> f64 {
        ewma_alpha(self.half_life)
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

/// The excursion rate a side starts with: P(Z > 3) of a standard normal.
const PRIOR_RATE: f64 = 0.001_35;

/// The shape ξ of the Pareto tail before any excursion.
const PRIOR_SHAPE: f64 = 0.25;

/// The shape ξ of a fitted Pareto tail is kept in [MIN_SHAPE, MAX_SHAPE]: no tail lighter
/// than a power law (an exponential tail makes a value 1 000 scales out impossible in f64),
/// none so heavy that its mean is infinite.
const MIN_SHAPE: f64 = 0.1;

/// See [`MIN_SHAPE`].
const MAX_SHAPE: f64 = 0.5;

/// Excursions of one side: their rate and the moments of their excess over the clip line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Tail {
    /// Share of values that are excursions on this side (EWMA).
    rate: f64,
    /// Mean excess, in the signal's unit (EWMA over excursions).
    mean: f64,
    /// Mean squared excess (EWMA over excursions).
    mean_sq: f64,
    /// Excursions seen.
    seen: u64,
}

impl Tail {
    fn start() -> Self {
        Tail {
            rate: PRIOR_RATE,
            ..Tail::default()
        }
    }

    /// P(excess ≥ y | excursion) under the fitted generalized Pareto tail,
    /// `(1 + ξ y ÷ β)^(−1/ξ)`; before any excursion, the prior tail of scale `prior_scale`.
    fn survival(&self, y: f64, prior_scale: f64) -> f64 {
        let (shape, scale) = self.fit(prior_scale);
        (1.0 + shape * y.max(0.0) / scale).powf(-1.0 / shape)
    }

    /// (ξ, β) by the method of moments: ξ = ½(1 − m²/s²), β = ½ m (1 + m²/s²) (Hosking &
    /// Wallis 1987), ξ clamped to [`MIN_SHAPE`, `MAX_SHAPE`] and β then set so the mean stays
    /// m: β = m (1 − ξ).
    fn fit(&self, prior_scale: f64) -> (f64, f64) {
        let floor = f64::MIN_POSITIVE;
        if self.seen == 0 {
            return (PRIOR_SHAPE, prior_scale.max(floor));
        }
        let m = self.mean.max(floor);
        let var = self.mean_sq - m * m;
        let shape = if var > 0.0 {
            (0.5 * (1.0 - m * m / var)).clamp(MIN_SHAPE, MAX_SHAPE)
        } else {
            MIN_SHAPE
        };
        (shape, (m * (1.0 - shape)).max(floor))
    }

    fn learn(&mut self, excess: Option<f64>, rate_alpha: f64, excess_alpha: f64, prior: f64) {
        self.rate += rate_alpha * (f64::from(u8::from(excess.is_some())) - self.rate);
        let Some(y) = excess else { return };
        if self.seen == 0 {
            // the prior tail counts as one excursion: a generalized Pareto distribution of
            // shape ξ and scale β has moments β ÷ (1 − ξ) and 2β² ÷ ((1 − ξ)(1 − 2ξ))
            self.mean = prior / (1.0 - PRIOR_SHAPE);
            self.mean_sq = 2.0 * prior * prior / ((1.0 - PRIOR_SHAPE) * (1.0 - 2.0 * PRIOR_SHAPE));
        }
        self.seen += 1;
        let a = excess_alpha.max(1.0 / (self.seen + 1) as f64);
        self.mean += a * (y - self.mean);
        self.mean_sq += a * (y * y - self.mean_sq);
    }
}

/// Excursions in a row on one side: a level shift once there are `shift_after` of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Run {
    /// 0 above, 1 below.
    side: usize,
    /// Excursions in the run (0: no run).
    len: u32,
    /// Sum of their values less the seasonal offset.
    sum: f64,
    /// The first one's excess over the clip line, in the signal's unit.
    first: f64,
    /// The side's excursion model before the run.
    before: Tail,
}

/// A seasonal slot: its offset to the level, values seen, the time of the last one, and the
/// largest excess above and below seen in the slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Slot {
    offset: f64,
    seen: u32,
    last_us: i64,
    #[serde(default)]
    reach: [f64; 2],
}

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
    /// Seasonal slots.
    #[serde(default)]
    seasonal: Vec<Slot>,
    /// Excursions above and below.
    #[serde(default)]
    tails: [Tail; 2],
    /// The current run of excursions.
    #[serde(default)]
    run: Run,
    /// The largest and smallest values seen, drawn back to the level with time.
    #[serde(default)]
    range: [f64; 2],
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
            Some(slot) if slot.seen >= spec.warm_up => slot.offset,
            _ => 0.0,
        }
    }

    /// The excess above and below already seen at this time of the period: the largest reach
    /// of the slot and its two neighbours (0 without seasonality).
    fn reach(&self, spec: &BaselineSpec, t_us: i64) -> [f64; 2] {
        let mut reach = [0.0f64; 2];
        let slots = self.seasonal.len();
        if let Some(s) = spec.slot(t_us).filter(|&s| s < slots) {
            for n in [s + slots - 1, s, s + 1] {
                let slot = &self.seasonal[n % slots];
                if slot.seen >= spec.warm_up {
                    reach[0] = reach[0].max(slot.reach[0]);
                    reach[1] = reach[1].max(slot.reach[1]);
                }
            }
        }
        reach
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
        let clip = spec.clip.max(0.0);
        let limit = clip * sigma;
        let prior = sigma / clip.max(1.0);
        let reach = self.reach(spec, t_us);
        // `residual`: how far the value went on the side's way, in the signal's unit (σ can
        // be small enough that z overflows)
        let side = |i: usize, residual: f64, core: f64| {
            let tail = &self.tails[i];
            let beyond = residual - limit - reach[i];
            if beyond > 0.0 {
                tail.rate * tail.survival(beyond, prior)
            } else {
                core.max(tail.rate).min(1.0)
            }
        };
        let mut p_high = side(0, x - expected, t.sf(z));
        let mut p_low = side(1, expected - x, t.cdf(z));
        if spec.range_half_life > 0.0 {
            let memory = (spec.range_half_life / std::f64::consts::LN_2).min(self.n as f64);
            let p_record = 1.0 / (memory + 1.0);
            let margin = spec.record_margin * (self.range[0] - self.range[1]);
            if x > self.range[0] + margin {
                p_high = p_high.min(p_record);
            }
            if x < self.range[1] - margin {
                p_low = p_low.min(p_record);
            }
        }
        Some(Score {
            expected,
            sigma,
            z,
            p_high,
            p_low,
            confident: self.n >= u64::from(spec.confident_after),
        })
    }

    /// Learns `x` seen at `t_us`. Values that are not finite are ignored.
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
                self.range = self
                    .warm
                    .iter()
                    .fold([f64::MIN, f64::MAX], |[hi, lo], &v| [hi.max(v), lo.min(v)]);
                self.warm = Vec::new();
                self.tails = [Tail::start(); 2];
            }
            return;
        }
        let offset = self.offset(spec, t_us);
        let expected = self.level + offset;
        let sigma = self.sigma(spec, expected);
        let limit = spec.clip.max(0.0) * sigma;
        let prior = sigma / spec.clip.max(1.0);
        let residual = x - expected;
        let r = residual.clamp(-limit, limit);

        // excursions: the tails, and a run of them on one side
        let excess = residual.abs() - limit;
        let side = (excess > 0.0).then_some(usize::from(residual < 0.0));
        match side {
            Some(s) if self.run.len > 0 && self.run.side == s => {}
            Some(s) => {
                self.run = Run {
                    side: s,
                    len: 0,
                    sum: 0.0,
                    first: excess,
                    before: self.tails[s],
                }
            }
            None => self.run = Run::default(),
        }
        if side.is_some() {
            self.run.len += 1;
            self.run.sum += x - offset;
        }
        let (rate_alpha, excess_alpha) = (
            ewma_alpha(spec.tail_half_life),
            ewma_alpha(spec.excess_half_life),
        );
        for (i, tail) in self.tails.iter_mut().enumerate() {
            let e = (side == Some(i)).then_some(excess);
            tail.learn(e, rate_alpha, excess_alpha, prior);
        }

        if let (Some(slot), Some((period, slots))) = (spec.slot(t_us), spec.season) {
            let slots = slots.max(1) as usize;
            if self.seasonal.len() < slots {
                self.seasonal.resize(slots, Slot::default());
            }
            let width = (period.max(1) / slots as i64).max(1);
            let s = &mut self.seasonal[slot];
            // weights halve every `season_half_life` periods: a slot covers `width` of each
            let since = if s.seen == 0 {
                width
            } else {
                (t_us - s.last_us).clamp(0, width)
            };
            let keep = 0.5f64.powf(since as f64 / (spec.season_half_life.max(0.01) * width as f64));
            let a = (1.0 - keep).max(1.0 / f64::from(s.seen.saturating_add(1)));
            // the slot's offset learns the residual against the global level
            let target = (x - self.level).clamp(s.offset - limit, s.offset + limit);
            s.offset += a * (target - s.offset);
            for (i, reach) in s.reach.iter_mut().enumerate() {
                *reach *= keep;
                if side == Some(i) {
                    *reach = reach.max(excess);
                }
            }
            s.seen = s.seen.saturating_add(1);
            s.last_us = t_us;
        }

        if spec.shift_after > 0 && self.run.len >= spec.shift_after {
            // a new level: move there; the shift counts as one excursion, not `shift_after`
            self.level = self.run.sum / f64::from(self.run.len);
            let tail = &mut self.tails[self.run.side];
            *tail = self.run.before;
            tail.learn(Some(self.run.first), rate_alpha, excess_alpha, prior);
            self.run = Run::default();
        } else {
            self.level += spec.alpha() * r;
        }
        // E|r| = MAD for a symmetric distribution: the spread follows |r| with the same weight
        self.mad += spec.alpha() * (r.abs() - self.mad);
        if spec.range_half_life > 0.0 {
            let keep = 0.5f64.powf(1.0 / spec.range_half_life);
            let level = self.level;
            self.range[0] = (level + (self.range[0] - level) * keep).max(x);
            self.range[1] = (level + (self.range[1] - level) * keep).min(x);
        }
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
        // 2.5 σ above with 5 degrees of freedom: P(T ≥ 2.5) = 0.02724 (t table)
        let s = b.score(&spec, 6, 10.5 + 2.5 * 1.4826).unwrap();
        assert!((s.p_high - 0.027_245).abs() < 1e-5, "{}", s.p_high);
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

    /// A baseline warmed up on 9 10 10 11 12 100: level 10.5, MAD 1 (σ = 1.4826).
    fn warmed(spec: &BaselineSpec) -> SignalBaseline {
        let mut b = SignalBaseline::new();
        for (i, x) in [10.0, 12.0, 11.0, 9.0, 100.0, 10.0].into_iter().enumerate() {
            b.learn(spec, i as i64, x);
        }
        b
    }

    #[test]
    fn the_first_excursion_is_scored_by_the_prior_pareto_tail() {
        let spec = BaselineSpec {
            range_half_life: 0.0,
            ..BaselineSpec::default()
        };
        let b = warmed(&spec);
        // clip line 3σ = 4.4478 above 10.5; prior tail: rate 0.00135, ξ 0.25, β = σ ÷ 3 =
        // 0.4942; an excess of 4β = 1.9768 has P = (1 + 0.25 × 4)^(−4) = 1/16
        let x = 10.5 + 3.0 * 1.4826 + 4.0 * 1.4826 / 3.0;
        let s = b.score(&spec, 6, x).unwrap();
        assert!((s.p_high - 0.001_35 / 16.0).abs() < 1e-12, "{}", s.p_high);
        assert!(s.p_low > 0.99, "{}", s.p_low);
        // just inside the clip line: the Student's t tail, P(T ≥ 2.9) with 5 dof = 0.01686
        let s = b.score(&spec, 6, 10.5 + 2.9 * 1.4826).unwrap();
        assert!((s.p_high - 0.016_86).abs() < 1e-4, "{}", s.p_high);
    }

    /// 100 and 102 alternating, with a spike of `spike` every 10th value, for `n` values.
    fn spiky(spec: &BaselineSpec, n: i64, spike: f64) -> SignalBaseline {
        let mut b = SignalBaseline::new();
        for i in 0..n {
            let x = if i % 10 == 9 {
                spike
            } else {
                100.0 + (i % 2) as f64 * 2.0
            };
            b.learn(spec, i, x);
        }
        b
    }

    #[test]
    fn routine_spikes_become_likely_and_a_higher_one_is_a_record() {
        let spec = BaselineSpec::default();
        let young = spiky(&spec, 9, 150.0);
        let old = spiky(&spec, 1000, 150.0);
        let first = young.score(&spec, 9, 150.0).unwrap().p_high;
        let routine = old.score(&spec, 1000, 150.0).unwrap().p_high;
        // the first spike: beyond anything seen (σ = 5 % of 101; excess 33.85 over the clip
        // line, prior tail scale 1.68: (1 + 0.25 × 33.85 ÷ 1.68)^(−4) × 0.00135 ≈ 1e-6); after
        // 100 of them the excursion rate is near 0.1 and the excess the usual one
        assert!(first < 1e-4, "{first}");
        assert!(routine > 0.02, "{routine}");
        // 160 is more than 5 % of the range (100 … 150) above it: a record, P = 1 ÷ (n + 1)
        let record = old.score(&spec, 1000, 160.0).unwrap();
        assert_eq!(record.p_high, 1.0 / 1001.0);
        // within the margin it is scored by the tail only
        let near = old.score(&spec, 1000, 152.0).unwrap();
        assert!(near.p_high > 1.0 / 1001.0, "{}", near.p_high);
    }

    #[test]
    fn excursions_in_a_row_make_a_new_level() {
        let spec = BaselineSpec::default();
        let mut b = warmed(&spec);
        for i in 6..100 {
            b.learn(&spec, i, 10.0 + (i % 2) as f64);
        }
        let before = b.expected(&spec, 100).unwrap();
        assert!((before - 10.5).abs() < 0.5, "{before}");
        // the first value of the new level is an anomaly
        assert!(b.score(&spec, 100, 50.0).unwrap().p_high < 1e-4);
        for i in 100..100 + i64::from(spec.shift_after) - 1 {
            b.learn(&spec, i, 50.0 + (i % 2) as f64);
        }
        assert!(b.expected(&spec, 200).unwrap() < 20.0, "not yet");
        b.learn(&spec, 200, 50.0);
        // the mean of the 9 values 50 51 50 51 50 51 50 51 50
        let after = b.expected(&spec, 201).unwrap();
        assert!((after - 454.0 / 9.0).abs() < 1e-9, "{after}");
        assert!(b.score(&spec, 201, 50.5).unwrap().p_high > 0.1);
    }

    #[test]
    fn a_spike_at_its_usual_time_of_day_is_expected_there_only() {
        const HOUR_US: i64 = 3_600_000_000;
        let spec = BaselineSpec {
            season: Some((24 * HOUR_US, 24)),
            ..BaselineSpec::default()
        };
        let mut b = SignalBaseline::new();
        // 20 days of hourly values, 5 or 6, and a nightly job at 03:00 that makes 40
        for h in 0..20 * 24 {
            let x = if h % 24 == 3 {
                40.0
            } else {
                5.0 + (h % 2) as f64
            };
            b.learn(&spec, h * HOUR_US, x);
        }
        let at_three = b.score(&spec, (20 * 24 + 3) * HOUR_US, 40.0).unwrap();
        let at_fifteen = b.score(&spec, (20 * 24 + 15) * HOUR_US, 40.0).unwrap();
        // within the reach of 03:00: as likely as an excursion is (one value in 24, learned
        // with a half-life of 600 values); at 15:00, also as unlikely as its excess
        assert_eq!(at_three.p_high, b.tails[0].rate);
        assert!(at_three.p_high > 0.01, "{}", at_three.p_high);
        assert!(
            at_fifteen.p_high < at_three.p_high / 2.0,
            "{}",
            at_fifteen.p_high
        );
        assert!(at_fifteen.z > 5.0, "{}", at_fifteen.z);
    }

    #[test]
    fn state_and_specs_round_trip_and_older_specs_read() {
        let spec = BaselineSpec {
            season: Some((86_400_000_000, 24)),
            ..BaselineSpec::default()
        };
        let b = spiky(&spec, 300, 150.0);
        let json = serde_json::to_string(&b).unwrap();
        let back: SignalBaseline = serde_json::from_str(&json).unwrap();
        // serde_json reads a float back to within an ulp (checkpoints use MessagePack: exact)
        assert_eq!(back.len(), b.len());
        assert_eq!(back.seasonal.len(), 24);
        for x in [101.0, 150.0, 160.0, 90.0] {
            let (s, r) = (
                b.score(&spec, 300, x).unwrap(),
                back.score(&spec, 300, x).unwrap(),
            );
            assert!(
                (s.p_high - r.p_high).abs() <= 1e-12 * s.p_high.max(1e-300),
                "{x}"
            );
            assert!((s.p_low - r.p_low).abs() <= 1e-12, "{x}");
        }
        // a spec written before the excursion and record fields existed
        let old = r#"{"warm_up":6,"confident_after":30,"half_life":60.0,"clip":3.0,
            "min_spread":0.0,"relative_spread_floor":0.05,"season":null}"#;
        let read: BaselineSpec = serde_json::from_str(old).unwrap();
        assert_eq!(read, BaselineSpec::default());
    }
}
