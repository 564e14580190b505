//! The simulator's random numbers: a seeded ChaCha8 stream and the few distributions the
//! landscape needs, written out so that a seed gives the same values on every platform and
//! with every version of the dependencies (ChaCha8's output is fixed by its specification;
//! `rand`'s distribution code may change between releases).

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// A deterministic random stream.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    inner: ChaCha8Rng,
    /// A second normal deviate from the last Box–Muller draw.
    spare: Option<f64>,
}

impl Rng {
    /// The stream `stream` of seed `seed`: streams of one seed are independent, so the plan
    /// (what happens when) does not change with how many records the run draws.
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream);
        Rng { inner, spare: None }
    }

    /// 64 random bits.
    pub(crate) fn bits(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.bits() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `[lo, hi]` (Lemire's multiply-shift; the bias is below 2⁻³² for the
    /// small ranges used here).
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        let span = (hi - lo) as u64 + 1;
        lo + ((u128::from(self.bits()) * u128::from(span)) >> 64) as i64
    }

    /// An index below `n` (`n` > 0).
    pub(crate) fn index(&mut self, n: usize) -> usize {
        self.range(0, n as i64 - 1) as usize
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Standard normal (Box–Muller, both deviates used).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Lognormal with the given median and shape `sigma` (the normal's standard deviation):
    /// `median · e^(σ·Z)`. Its p99/p50 ratio is `e^(2.326σ)`.
    pub(crate) fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson with mean `lambda`: Knuth's product of uniforms below 30, the normal
    /// approximation (rounded, at least 0) above, where it is within a few per cent.
    pub(crate) fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut k = 0u64;
            let mut p = self.unit();
            while p > limit {
                k += 1;
                p *= self.unit();
            }
            return k;
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
    }

    /// A count with mean `mean`: `⌊mean⌋`, plus one with probability `mean − ⌊mean⌋`
    /// (calls per request: a 1.0 edge is called exactly once, a 0.3 edge by 30 % of requests).
    pub(crate) fn count(&mut self, mean: f64) -> u32 {
        let whole = mean.floor();
        whole as u32 + u32::from(self.chance(mean - whole))
    }

    /// An index drawn with the given weights (not all zero).
    pub(crate) fn weighted(&mut self, weights: impl Iterator<Item = f64> + Clone) -> usize {
        let total: f64 = weights.clone().sum();
        let mut x = self.unit() * total;
        let mut last = 0;
        for (i, w) in weights.enumerate() {
            if x < w {
                return i;
            }
            x -= w;
            last = i;
        }
        last
    }

    /// A request id shaped like Envoy's `x-request-id` (a version-4 UUID, 36 characters).
    pub(crate) fn uuid(&mut self) -> String {
        let hi = self.bits();
        let lo = self.bits();
        let hi = (hi & !0xf000) | 0x4000;
        let lo = (lo & !(0xc << 60)) | (0x8 << 60);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |seed, stream| {
            let mut r = Rng::new(seed, stream);
            (0..4).map(|_| r.bits()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 0), draw(7, 0));
        assert_ne!(draw(7, 0), draw(7, 1));
        assert_ne!(draw(7, 0), draw(8, 0));
    }

    #[test]
    fn distributions_have_their_moments() {
        let mut r = Rng::new(1, 0);
        let n = 200_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / n as f64;
        assert!((mean(&mut || r.unit()) - 0.5).abs() < 0.005);
        assert!(mean(&mut || r.normal()).abs() < 0.01);
        assert!((mean(&mut || r.normal().powi(2)) - 1.0).abs() < 0.02);
        for lambda in [0.3, 4.0, 80.0] {
            let m = mean(&mut || r.poisson(lambda) as f64);
            assert!((m - lambda).abs() < 0.02 * lambda.max(1.0), "{lambda}: {m}");
        }
        assert!((mean(&mut || f64::from(r.count(2.25))) - 2.25).abs() < 0.01);
        // lognormal: the median is the given one, p99/p50 = e^(2.326σ)
        let mut v: Vec<f64> = (0..n).map(|_| r.lognormal(10.0, 1.0)).collect();
        v.sort_by(f64::total_cmp);
        let (p50, p99) = (v[n / 2], v[n * 99 / 100]);
        assert!((p50 - 10.0).abs() < 0.2, "{p50}");
        assert!(((p99 / p50) - 2.326f64.exp()).abs() < 0.5, "{}", p99 / p50);
        let counts = (0..30_000).fold([0u32; 3], |mut c, _| {
            c[r.weighted([1.0, 2.0, 0.0].into_iter())] += 1;
            c
        });
        assert_eq!(counts[2], 0);
        assert!(
            (f64::from(counts[1]) / 20_000.0 - 1.0).abs() < 0.05,
            "{counts:?}"
        );
        let id = r.uuid();
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");
    }
}
