//! The scoring rules of the Numenta Anomaly Benchmark (NAB), written from Lavin & Ahmad,
//! "Evaluating Real-time Anomaly Detection Algorithms — the Numenta Anomaly Benchmark" (2015),
//! and the rules of its reference scorer (numenta/NAB: `nab/sweeper.py`, `nab/optimizer.py`,
//! `nab/runner.py`, `config/profiles.json`):
//!
//! * **probationary period**: the first `min(⌊0.15 × rows⌋, 750)` rows of each file are not
//!   scored (a detector is still learning there); see [`probationary_len`];
//! * **windows**: each labelled anomaly has a window of rows `[first, last]`; a detection is a
//!   row whose anomaly score is at or above the threshold;
//! * **true positive**: only the earliest detection in a window counts, weighted by its
//!   position, `A_TP × σ(y) ÷ σ(−1)` with the scaled sigmoid `σ(y) = 2 ÷ (1 + e^(5y)) − 1`
//!   and `y = −(last − i + 1) ÷ width` (−1 at the window's first row, −1 ÷ width at its
//!   last): a detection at the start of a window earns `A_TP`, one at the end almost nothing;
//! * **false negative**: a window without a detection costs `A_FN`;
//! * **false positive**: each detection outside windows costs `A_FP × σ(y)` with
//!   `y = (i − last) ÷ (width − 1)` of the window before it (a detection just after a
//!   window costs little, one more than 3 widths after it, or before any window, costs
//!   `A_FP`);
//! * **profiles** ([`PROFILES`]): standard (A_TP 1, A_FP 0.11, A_FN 1), reward low FP rate
//!   (A_FP 0.22), reward low FN rate (A_FN 2); true negatives weigh nothing;
//! * **threshold**: one threshold for the whole corpus per profile, the one that gives the
//!   highest raw score (ties: the highest such threshold; `1.1` stands for "no detection");
//! * **normalisation**: `100 × (raw − null) ÷ (perfect − null)`, where `null` is the raw score
//!   of the null detector (a constant anomaly score of 0.5, its threshold optimised the same
//!   way: in practice it detects nothing and scores −A_FN per window) and `perfect` is
//!   `A_TP × windows`.
//!
//! Rows are compared by index, as NAB does (its windows are given as timestamps of rows of
//! the file). NAB's own quirks are kept: a window whose rows all fall in the probationary
//! period is neither a miss nor a hit, yet counts in `perfect`. Where NAB's scorer would fail
//! (a false positive after a one-row window divides by `width − 1 = 0`) the false positive
//! costs the full `A_FP`.

/// The cost matrix of one NAB application profile (NAB `config/profiles.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// The profile's name in NAB's results: `standard`, `reward_low_FP_rate`,
    /// `reward_low_FN_rate`.
    pub name: &'static str,
    /// A_TP: the reward of a window detected at its first row.
    pub tp_weight: f64,
    /// A_FP: the cost of a detection far from any window.
    pub fp_weight: f64,
    /// A_FN: the cost of a window with no detection.
    pub fn_weight: f64,
}

/// NAB's standard profile: A_TP 1, A_FP 0.11, A_FN 1.
pub const STANDARD: Profile = Profile {
    name: "standard",
    tp_weight: 1.0,
    fp_weight: 0.11,
    fn_weight: 1.0,
};

/// NAB's profile that rewards a low false-positive rate: A_FP 0.22.
pub const REWARD_LOW_FP: Profile = Profile {
    name: "reward_low_FP_rate",
    tp_weight: 1.0,
    fp_weight: 0.22,
    fn_weight: 1.0,
};

/// NAB's profile that rewards a low false-negative rate: A_FN 2.
pub const REWARD_LOW_FN: Profile = Profile {
    name: "reward_low_FN_rate",
    tp_weight: 1.0,
    fp_weight: 0.11,
    fn_weight: 2.0,
};

/// The three profiles NAB reports, in its order of presentation.
pub const PROFILES: [Profile; 3] = [STANDARD, REWARD_LOW_FP, REWARD_LOW_FN];

/// The threshold that stands for "no detection" (above every anomaly score in [0, 1]), as in
/// NAB's sweep.
pub const NO_DETECTION: f64 = 1.1;

/// The anomaly score of NAB's null detector.
pub const NULL_SCORE: f64 = 0.5;

/// Rows at the start of a file that are not scored: `min(⌊0.15 × rows⌋, 0.15 × 5000)`
/// (NAB `util.getProbationPeriod`).
pub fn probationary_len(rows: usize) -> usize {
    ((0.15 * rows as f64).floor() as usize).min(750)
}

/// NAB's scaled sigmoid of a relative position `y`: `2 ÷ (1 + e^(5y)) − 1`, and −1 for
/// `y > 3`. Equals 0.98661 at y = −1 (a window's first row), 0 at y = 0 (just past its last
/// row) and −0.98661 at y = 1.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// A labelled anomaly window: rows `first..=last` of a file (indices from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The window's first row.
    pub first: usize,
    /// The window's last row (inclusive).
    pub last: usize,
}

impl Window {
    /// Rows in the window.
    pub fn width(&self) -> usize {
        self.last + 1 - self.first
    }
}

/// What a row would be worth if it were a detection, before the profile's weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowRule {
    /// The window the row is in (index into the file's windows), if any.
    pub window: Option<usize>,
    /// In a window: σ(y) of the row's position in it; outside: σ(y) of its distance past
    /// the window before it (−1 before any window).
    pub unweighted: f64,
    /// Whether the row is scored (past the probationary period).
    pub scored: bool,
}

impl RowRule {
    /// The row's value as a detection under `profile` (NAB's "sweep score" S(t)): in a
    /// window `A_TP × σ(y) ÷ σ(−1)`, outside `A_FP × σ(y)`.
    pub fn weighted(&self, profile: &Profile) -> f64 {
        if self.window.is_some() {
            self.unweighted * profile.tp_weight / scaled_sigmoid(-1.0)
        } else {
            self.unweighted * profile.fp_weight
        }
    }
}

/// A data file's labels: its row count and its anomaly windows (sorted, not overlapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// Rows in the file.
    pub rows: usize,
    /// The labelled windows, in row order.
    pub windows: Vec<Window>,
}

impl Labelled {
    /// Each row's rule (see [`RowRule`]), in row order.
    pub fn rules(&self) -> Vec<RowRule> {
        let probation = probationary_len(self.rows);
        let mut out = Vec::with_capacity(self.rows);
        let mut next = 0; // the next window to enter
        let mut previous: Option<Window> = None;
        for i in 0..self.rows {
            while next < self.windows.len() && self.windows[next].last < i {
                previous = Some(self.windows[next]);
                next += 1;
            }
            let inside = self
                .windows
                .get(next)
                .filter(|w| w.first <= i && i <= w.last);
            let (window, unweighted) = match (inside, previous) {
                (Some(w), _) => {
                    let y = -((w.last - i + 1) as f64) / w.width() as f64;
                    (Some(next), scaled_sigmoid(y))
                }
                (None, Some(w)) if w.width() > 1 => {
                    let y = (i - w.last) as f64 / (w.width() - 1) as f64;
                    (None, scaled_sigmoid(y))
                }
                (None, _) => (None, -1.0),
            };
            out.push(RowRule {
                window,
                unweighted,
                scored: i >= probation,
            });
        }
        out
    }

    /// Windows with at least one scored row (the ones that count as a hit or a miss).
    pub fn scored_windows(&self) -> usize {
        let probation = probationary_len(self.rows);
        self.windows.iter().filter(|w| w.last >= probation).count()
    }
}

/// One file's result at a threshold (NAB's per-file row of `<detector>_<profile>_scores.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FileScore {
    /// Raw score: rewards of detected windows, costs of missed windows and false positives.
    pub score: f64,
    /// Scored rows in windows at or above the threshold (NAB's TP count, in rows).
    pub tp: usize,
    /// Scored rows outside windows below the threshold.
    pub tn: usize,
    /// Scored rows outside windows at or above the threshold.
    pub fp: usize,
    /// Scored rows in windows below the threshold.
    pub fn_: usize,
    /// Windows with a detection.
    pub windows_detected: usize,
    /// Windows that count (with a scored row).
    pub windows: usize,
}

impl FileScore {
    /// Adds another file's result (corpus and category totals).
    pub fn add(&mut self, other: &FileScore) {
        self.score += other.score;
        self.tp += other.tp;
        self.tn += other.tn;
        self.fp += other.fp;
        self.fn_ += other.fn_;
        self.windows_detected += other.windows_detected;
        self.windows += other.windows;
    }
}

/// A file's rules and a detector's anomaly scores for it (one per row, in [0, 1]).
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    /// The file's row rules ([`Labelled::rules`]).
    pub rules: &'a [RowRule],
    /// The detector's anomaly score of each row.
    pub scores: &'a [f64],
}

/// The file's raw score and counts under `profile` when rows with an anomaly score at or
/// above `threshold` are detections (NAB `Sweeper.scoreDataSet`).
pub fn score_file(file: Scored<'_>, profile: &Profile, threshold: f64) -> FileScore {
    let windows = file
        .rules
        .iter()
        .filter_map(|r| r.window)
        .max()
        .map_or(0, |w| w + 1);
    // the best detection of each window so far; None: the window has no scored row
    let mut best: Vec<Option<f64>> = vec![None; windows];
    let mut out = FileScore::default();
    let mut fp_sum = 0.0;
    for (rule, &s) in file.rules.iter().zip(file.scores) {
        if !rule.scored {
            continue;
        }
        let detected = s >= threshold;
        match rule.window {
            Some(w) => {
                let b = best[w].get_or_insert(-profile.fn_weight);
                if detected {
                    out.tp += 1;
                    *b = b.max(rule.weighted(profile));
                } else {
                    out.fn_ += 1;
                }
            }
            None if detected => {
                out.fp += 1;
                fp_sum += rule.weighted(profile);
            }
            None => out.tn += 1,
        }
    }
    let mut window_sum = 0.0;
    for b in best.iter().flatten() {
        out.windows += 1;
        if *b > -profile.fn_weight {
            out.windows_detected += 1;
        }
        window_sum += b;
    }
    out.score = window_sum + fp_sum;
    out
}

/// The threshold that maximises the corpus's raw score under `profile`, and that score
/// (NAB `optimizer.optimizeThreshold` over `Sweeper.calcScoreByThreshold`): every distinct
/// anomaly score of a scored row is tried, from the highest down, after [`NO_DETECTION`].
pub fn optimize(files: &[Scored<'_>], profile: &Profile) -> (f64, f64) {
    struct Row {
        score: f64,
        window: Option<usize>, // index into `best`
        weighted: f64,
    }
    let mut best: Vec<f64> = Vec::new();
    let mut rows = Vec::new();
    for file in files {
        let base = best.len();
        let mut windows = 0;
        let mut seen: Vec<bool> = Vec::new();
        for (rule, &s) in file.rules.iter().zip(file.scores) {
            if let Some(w) = rule.window {
                windows = windows.max(w + 1);
                if seen.len() < windows {
                    seen.resize(windows, false);
                }
                seen[w] |= rule.scored;
            }
            if rule.scored {
                rows.push(Row {
                    score: s,
                    window: rule.window.map(|w| base + w),
                    weighted: rule.weighted(profile),
                });
            }
        }
        // a window with no scored row never enters the sum (NAB's `scoreParts`)
        best.extend(
            seen.iter()
                .map(|&s| if s { -profile.fn_weight } else { 0.0 }),
        );
    }
    rows.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut window_sum: f64 = best.iter().sum();
    let mut fp_sum = 0.0;
    let mut optimum = (NO_DETECTION, window_sum);
    let mut i = 0;
    while i < rows.len() {
        let threshold = rows[i].score;
        while i < rows.len() && rows[i].score == threshold {
            let r = &rows[i];
            match r.window {
                Some(w) if r.weighted > best[w] => {
                    window_sum += r.weighted - best[w];
                    best[w] = r.weighted;
                }
                Some(_) => {}
                None => fp_sum += r.weighted,
            }
            i += 1;
        }
        let total = window_sum + fp_sum;
        if total > optimum.1 {
            optimum = (threshold, total);
        }
    }
    optimum
}

/// One profile's result on a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileResult {
    /// The profile.
    pub profile: Profile,
    /// The threshold chosen by [`optimize`].
    pub threshold: f64,
    /// Each file's result at that threshold, in the order given.
    pub files: Vec<FileScore>,
    /// Each file's result for the null detector at its own optimised threshold.
    pub null_files: Vec<FileScore>,
    /// Raw corpus score (the sum of the files').
    pub raw: f64,
    /// The null detector's raw corpus score.
    pub null: f64,
    /// The perfect detector's raw score: A_TP × windows.
    pub perfect: f64,
}

impl ProfileResult {
    /// The NAB score, `100 × (raw − null) ÷ (perfect − null)`; `None` for a corpus with no
    /// window that counts (perfect = null).
    pub fn normalized(&self) -> Option<f64> {
        normalized(self.raw, self.null, self.perfect)
    }
}

/// `100 × (raw − null) ÷ (perfect − null)`, `None` when perfect = null.
pub fn normalized(raw: f64, null: f64, perfect: f64) -> Option<f64> {
    (perfect != null).then(|| 100.0 * (raw - null) / (perfect - null))
}

/// Scores a corpus under `profile`: the detector's optimised threshold and per-file results,
/// the null detector's, and the perfect score. `files` pairs each file's labels with the
/// detector's anomaly scores (one per row).
pub fn evaluate(files: &[(&Labelled, &[f64])], profile: &Profile) -> ProfileResult {
    let rules: Vec<Vec<RowRule>> = files.iter().map(|(l, _)| l.rules()).collect();
    let nulls: Vec<Vec<f64>> = files
        .iter()
        .map(|(l, _)| vec![NULL_SCORE; l.rows])
        .collect();
    let detector: Vec<Scored<'_>> = rules
        .iter()
        .zip(files)
        .map(|(rules, (_, scores))| Scored { rules, scores })
        .collect();
    let null: Vec<Scored<'_>> = rules
        .iter()
        .zip(&nulls)
        .map(|(rules, scores)| Scored { rules, scores })
        .collect();
    let (threshold, _) = optimize(&detector, profile);
    let (null_threshold, _) = optimize(&null, profile);
    let per_file: Vec<FileScore> = detector
        .iter()
        .map(|f| score_file(*f, profile, threshold))
        .collect();
    let null_files: Vec<FileScore> = null
        .iter()
        .map(|f| score_file(*f, profile, null_threshold))
        .collect();
    let windows: usize = files.iter().map(|(l, _)| l.windows.len()).sum();
    ProfileResult {
        profile: *profile,
        threshold,
        raw: per_file.iter().map(|f| f.score).sum(),
        null: null_files.iter().map(|f| f.score).sum(),
        perfect: profile.tp_weight * windows as f64,
        files: per_file,
        null_files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 rows, one window at rows 40..=59 (width 20); rows 0..=14 are probationary
    /// (⌊0.15 × 100⌋ = 15).
    fn hundred() -> Labelled {
        Labelled {
            rows: 100,
            windows: vec![Window {
                first: 40,
                last: 59,
            }],
        }
    }

    /// Scores 1.0 at `rows`, 0 elsewhere.
    fn detections(rows: &[usize]) -> Vec<f64> {
        let mut s = vec![0.0; 100];
        for &r in rows {
            s[r] = 1.0;
        }
        s
    }

    fn standard(rows: &[usize]) -> FileScore {
        let l = hundred();
        score_file(
            Scored {
                rules: &l.rules(),
                scores: &detections(rows),
            },
            &STANDARD,
            0.5,
        )
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn scaled_sigmoid_and_probation_follow_nab() {
        // σ(y) = 2 ÷ (1 + e^(5y)) − 1 = tanh(−2.5 y)
        assert!(close(scaled_sigmoid(-1.0), 2.5f64.tanh()));
        assert!(close(scaled_sigmoid(-1.0), 0.986_614_298_151_430_5));
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!(close(scaled_sigmoid(3.0), -(7.5f64.tanh())));
        assert_eq!(scaled_sigmoid(3.01), -1.0);
        assert_eq!(probationary_len(100), 15);
        assert_eq!(probationary_len(4032), 604);
        // capped at 0.15 × 5000
        assert_eq!(probationary_len(10_000), 750);
    }

    #[test]
    fn a_detection_at_the_start_of_the_window_earns_a_tp() {
        // y = −(59 − 40 + 1) ÷ 20 = −1: σ(−1) ÷ σ(−1) × A_TP
        let s = standard(&[40]);
        assert!(close(s.score, 1.0), "{}", s.score);
        assert_eq!((s.tp, s.fp, s.fn_, s.tn), (1, 0, 19, 65));
        assert_eq!((s.windows_detected, s.windows), (1, 1));
    }

    #[test]
    fn a_detection_at_the_end_earns_little_and_in_the_middle_most() {
        // end: y = −1 ÷ 20, tanh(0.125) ÷ tanh(2.5) = 0.126040
        assert!(close(standard(&[59]).score, 0.126_040_137_472_759_2));
        // middle: y = −10 ÷ 20, tanh(1.25) ÷ tanh(2.5) = 0.859793
        assert!(close(standard(&[50]).score, 0.859_792_566_909_783_7));
    }

    #[test]
    fn only_the_earliest_detection_in_a_window_counts() {
        // row 45: y = −15 ÷ 20, tanh(1.875) ÷ tanh(2.5) = 0.966989; rows 50 and 59 add nothing
        let s = standard(&[45, 50, 59]);
        assert!(close(s.score, 0.966_989_087_800_060_5), "{}", s.score);
        assert_eq!(s.tp, 3);
    }

    #[test]
    fn false_positives_cost_by_their_distance_past_the_window() {
        // row 60: y = (60 − 59) ÷ (20 − 1), 0.11 × σ(1/19) = −0.014391
        let s = standard(&[40, 60]);
        assert!(
            close(s.score, 1.0 - 0.014_390_730_906_933_252),
            "{}",
            s.score
        );
        assert_eq!(s.fp, 1);
        // row 99: y = 40 ÷ 19 = 2.1, nearly the full 0.11
        assert!(close(
            standard(&[40, 99]).score,
            1.0 - 0.109_994_099_481_579_33
        ));
        // row 20, before any window: the full A_FP
        assert!(close(standard(&[20, 40]).score, 1.0 - 0.11));
    }

    #[test]
    fn no_detection_misses_the_window_and_probation_is_not_scored() {
        let s = standard(&[]);
        assert_eq!(s.score, -1.0);
        assert_eq!((s.tp, s.fp, s.fn_, s.tn), (0, 0, 20, 65));
        // row 10 is probationary: neither a false positive nor anything else
        assert_eq!(standard(&[10]).score, -1.0);
        let low_fn = score_file(
            Scored {
                rules: &hundred().rules(),
                scores: &detections(&[]),
            },
            &REWARD_LOW_FN,
            0.5,
        );
        assert_eq!(low_fn.score, -2.0);
    }

    #[test]
    fn the_threshold_is_the_corpus_best_and_scores_are_normalised() {
        let l = hundred();
        // row 50 scores 0.9 (a TP, 0.859793), row 80 scores 0.95 (an FP 21 rows past the
        // window: 0.11 × σ(21/19) = −0.109128); from the top: 1.1 → −1, 0.95 → −1.109128,
        // 0.9 → 0.859793 − 0.109128 = 0.750665, 0 → every row detected (25 FPs before the
        // window alone cost 2.75)
        let mut scores = vec![0.0; 100];
        scores[50] = 0.9;
        scores[80] = 0.95;
        let r = evaluate(&[(&l, &scores)], &STANDARD);
        assert_eq!(r.threshold, 0.9);
        assert!(close(r.raw, 0.750_664_832_811_004_8), "{}", r.raw);
        // the null detector (0.5 everywhere) is best detecting nothing: −A_FN; perfect: A_TP
        assert_eq!((r.null, r.perfect), (-1.0, 1.0));
        let expected = 100.0 * (0.750_664_832_811_004_8 + 1.0) / 2.0;
        assert!(close(r.normalized().unwrap(), expected));
        // detecting nothing is the null detector's score; the window's first row is 100
        let none = evaluate(&[(&l, &vec![0.0; 100])], &STANDARD);
        assert_eq!(none.threshold, NO_DETECTION);
        assert_eq!(none.normalized(), Some(0.0));
        assert_eq!(
            evaluate(&[(&l, &detections(&[40]))], &STANDARD).normalized(),
            Some(100.0)
        );
        // reward_low_FN: null −2, so the same detections score 100 × (0.750665 + 2) ÷ 3
        let fn_ = evaluate(&[(&l, &scores)], &REWARD_LOW_FN);
        assert!(close(
            fn_.normalized().unwrap(),
            100.0 * 2.750_664_832_811_004_8 / 3.0
        ));
    }

    #[test]
    fn one_threshold_serves_every_file() {
        // file A has its TP (row 50) at 0.9, file B its TP at 0.92 and an FP before any window
        // at 0.95: 1.1 → −2; 0.95 → −2.11; 0.92 → −1 + 0.859793 − 0.11; 0.9 → 2 × 0.859793
        // − 0.11, the best: one threshold for both files
        let l = hundred();
        let mut a = vec![0.0; 100];
        a[50] = 0.9;
        let mut b = vec![0.0; 100];
        b[50] = 0.92;
        b[20] = 0.95;
        let r = evaluate(&[(&l, &a), (&l, &b)], &STANDARD);
        assert_eq!(r.threshold, 0.9);
        let tp = 0.859_792_566_909_783_7;
        assert!(close(r.raw, 2.0 * tp - 0.11), "{}", r.raw);
        assert!(close(r.files[0].score, tp) && close(r.files[1].score, tp - 0.11));
        // the null detector: −1 per file; perfect: 1 per window
        assert_eq!((r.null, r.perfect), (-2.0, 2.0));
    }

    #[test]
    fn a_window_in_the_probation_counts_only_in_perfect() {
        // NAB's scorer leaves a window wholly in the probationary period out of the sum, and
        // its normalisation counts every window of the label file
        let l = Labelled {
            rows: 100,
            windows: vec![
                Window { first: 2, last: 9 },
                Window {
                    first: 40,
                    last: 59,
                },
            ],
        };
        assert_eq!(l.scored_windows(), 1);
        let r = evaluate(&[(&l, &vec![0.0; 100])], &STANDARD);
        assert_eq!((r.raw, r.null, r.perfect), (-1.0, -1.0, 2.0));
        // a row just past the early window is a false positive 1 ÷ 7 of its width past it
        let rules = l.rules();
        assert_eq!(rules[10].window, None);
        assert!(close(rules[10].unweighted, scaled_sigmoid(1.0 / 7.0)));
        assert_eq!(rules[40].window, Some(1));
    }
}
