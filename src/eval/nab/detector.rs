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

use super::rules::{Labelled, Profile, RowRule, Scored, score_file};

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

/// Scores a series online, before any hold: each row's anomaly score is computed from the
/// rows before it only (the baseline scores the value, then learns it); rows during warm-up
/// score 0. `t_us` and `values` have one entry per row.
pub fn scores(spec: &BaselineSpec, t_us: &[i64], values: &[f64]) -> Vec<f64> {
    let mut baseline = SignalBaseline::new();
    t_us.iter()
        .zip(values)
        .map(|(&t, &x)| {
            let s = baseline
                .score(spec, t, x)
                .map_or(0.0, |s| anomaly_score(&s));
            baseline.learn(spec, t, x);
            s
        })
        .collect()
}

/// The detector's anomaly scores when it reports from `reported`: a row scoring at least
/// `reported` keeps its score and the next [`HOLD_VALUES`] rows score 0, whatever their
/// score (the baseline still learned them); a row below `reported` keeps its score.
///
/// The pipeline reports an incident once while it lasts (its debounce), not once per window;
/// NAB likewise counts only the first detection in an anomaly window and every later one
/// outside it as a false positive. The hold starts at the threshold the detector reports
/// from, so NAB's scorer at that threshold sees exactly the reported rows.
pub fn hold(scores: &[f64], reported: f64) -> Vec<f64> {
    let mut quiet = 0usize;
    scores
        .iter()
        .map(|&s| {
            if quiet > 0 {
                quiet -= 1;
                return 0.0;
            }
            if s >= reported {
                quiet = HOLD_VALUES;
            }
            s
        })
        .collect()
}

/// Values after a reported one that score 0: 72 (6 hours of NAB's 5-minute samples).
/// Measured on the NAB subset (`graywatch eval nab`, standard profile, each hold at its own
/// best reporting threshold): 70.7 without a hold, 72.0 with 12 values, 72.3 with 24 and 36,
/// 72.6 with 48, 72.7 with 72, 72.8 with 96 and 108, then unsteady: 70.6 with 120, 73.8 with
/// 144, 72.3 with 156, 69.9 with 192, 66.3 with 288 (a hold that long hides the next
/// anomaly). 72 is taken from the steady stretch, not the best single value.
pub const HOLD_VALUES: usize = 72;

/// The reporting thresholds [`reporting_threshold`] tries, in thousandths: 0.250 to 0.750.
pub const REPORTING_GRID: std::ops::RangeInclusive<u32> = 250..=750;

/// The threshold the detector reports from, chosen as NAB chooses a detector's threshold:
/// the one that gives the corpus's highest raw score under `profile`, ties to the highest.
/// Since the hold starts at it, each candidate is scored on the series held at it
/// ([`hold`]); candidates are [`REPORTING_GRID`]'s. `files` pairs each file's labels with
/// its scores before the hold ([`scores`]).
pub fn reporting_threshold(files: &[(&Labelled, &[f64])], profile: &Profile) -> f64 {
    let rules: Vec<Vec<RowRule>> = files.iter().map(|(l, _)| l.rules()).collect();
    let mut best = (f64::NAN, f64::NEG_INFINITY);
    for thousandths in REPORTING_GRID {
        // the f64 nearest the decimal, so that a score of 0.4 is at or above 0.400
        let threshold = f64::from(thousandths) / 1000.0;
        let raw: f64 = rules
            .iter()
            .zip(files)
            .map(|(rules, (_, scores))| {
                let held = hold(scores, threshold);
                score_file(
                    Scored {
                        rules,
                        scores: &held,
                    },
                    profile,
                    threshold,
                )
                .score
            })
            .sum();
        if raw >= best.1 {
            best = (threshold, raw);
        }
    }
    best.0
}

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
        // 5-minute samples around 10, spikes of 1000 at rows 600, 605 and 700
        let t: Vec<i64> = (0..800).map(|i| i * 300_000_000).collect();
        let mut x: Vec<f64> = (0..800).map(|i| 10.0 + (i % 7) as f64 * 0.1).collect();
        for i in [600, 605, 700] {
            x[i] = 1000.0;
        }
        let raw = scores(&nab_spec(), &t, &x);
        assert!(raw[605] > 0.4, "{}", raw[605]);
        let held = hold(&raw, 0.5);
        assert_eq!(held[600], raw[600]);
        assert!(held[600] >= 0.5, "{}", held[600]);
        // within the hold: 0 whatever the value
        assert!(held[601..=600 + HOLD_VALUES].iter().all(|&s| s == 0.0));
        // after it, a spike is scored again (less: the baseline learned the two before)
        assert_eq!(held[700], raw[700]);
        assert!(held[700] > 0.4, "{}", held[700]);
        // a row below the reporting threshold holds nothing
        let below = hold(&raw, 1.0);
        assert_eq!(below, raw);
    }

    #[test]
    fn the_reporting_threshold_is_scored_with_its_own_hold() {
        use crate::eval::nab::rules::{STANDARD, Window};
        // 200 rows, one window at rows 40..=59; rows 0..=29 probationary
        let labelled = Labelled {
            rows: 200,
            windows: vec![Window {
                first: 40,
                last: 59,
            }],
        };
        // a weak early sign in the window, the anomaly's peak later in it, two echoes after it
        let mut raw = vec![0.0; 200];
        raw[48] = 0.4;
        raw[50] = 0.7;
        raw[100] = 0.5;
        raw[110] = 0.5;
        // From 0.4 the detector reports row 48 and holds the rest: the window detected early
        // and no false positive, the best. Scored without the hold, 0.4 would also count the
        // echoes (two false positives), and 0.7 would be the best threshold.
        let files = [(&labelled, raw.as_slice())];
        assert_eq!(reporting_threshold(&files, &STANDARD), 0.4);
        let unheld = crate::eval::nab::rules::optimize(
            &[Scored {
                rules: &labelled.rules(),
                scores: &raw,
            }],
            &STANDARD,
        );
        assert_eq!(unheld.0, 0.7);
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
