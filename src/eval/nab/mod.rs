//! `graywatch eval nab`: the per-signal baseline ([`detect::adaptive`]) on the Numenta Anomaly
//! Benchmark, scored with NAB's own rules ([`rules`]).
//!
//! ```text
//!  DATA_DIR/<category>/<file>.csv ──▶ detector (one SignalBaseline per file, online)
//!        (timestamp,value)                 │ anomaly score per row, in [0, 1]
//!                                          ▼
//!                  OUT_DIR/<category>/graywatch_<file>.csv (timestamp,value,anomaly_score)
//!                                          │
//!  labels (combined_windows.json) ───▶ rules: threshold per profile, raw and normalised scores
//! ```
//!
//! The benchmark: Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms — the
//! Numenta Anomaly Benchmark" (2015); data, labels and reference scorer in numenta/NAB (MIT).

pub mod corpus;
pub mod detector;
pub mod rules;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use corpus::Series;
use rules::{FileScore, Labelled, PROFILES, ProfileResult};

/// The detector's name in results files (`graywatch_<file>.csv`), as NAB names detectors.
pub const DETECTOR: &str = "graywatch";

/// `graywatch eval nab`'s options.
#[derive(Debug, Args)]
pub struct NabArgs {
    /// NAB's data folder: `DATA_DIR/<category>/<file>.csv`, each `timestamp,value`.
    #[arg(value_name = "DATA_DIR")]
    pub data_dir: PathBuf,
    /// Write each file's anomaly scores to `OUT_DIR/<category>/graywatch_<file>.csv`
    /// (`timestamp,value,anomaly_score`), NAB's results layout.
    #[arg(long, value_name = "OUT_DIR", required_unless_present = "results")]
    pub out: Option<PathBuf>,
    /// NAB's label file (anomaly windows per file). Default:
    /// `DATA_DIR/../labels/combined_windows.json`.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Score another detector's results instead of running graywatch's: DIR is NAB's
    /// `results/<detector>` folder, holding `<category>/<detector>_<file>.csv` with an
    /// `anomaly_score` column (e.g. NAB's `results/numenta`, to compare on the same files).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub results: Option<PathBuf>,
    /// Also print each file's result under the standard profile.
    #[arg(long)]
    pub files: bool,
}

/// One file scored: its series, labels and anomaly scores.
struct File {
    series: Series,
    labelled: Labelled,
    scores: Vec<f64>,
}

/// `graywatch eval nab`: runs the detector over every data file (or reads `--results`),
/// scores the corpus under the three profiles and prints the table on stdout.
///
/// # Errors
/// A data, label or results file that can't be read or doesn't follow NAB's format (the error
/// names the file and line), or an output that can't be written.
pub fn run(args: NabArgs) -> anyhow::Result<()> {
    let labels_path = args.labels.clone().unwrap_or_else(|| {
        args.data_dir
            .join("..")
            .join("labels")
            .join("combined_windows.json")
    });
    let labels = corpus::read_labels(&labels_path)?;
    let series = corpus::read_data_dir(&args.data_dir)
        .with_context(|| format!("reading NAB data in {}", args.data_dir.display()))?;
    anyhow::ensure!(
        !series.is_empty(),
        "{}: no <category>/<file>.csv data files",
        args.data_dir.display()
    );
    let spec = detector::nab_spec();
    let mut files = Vec::with_capacity(series.len());
    let bar = super::progress(series.len() as u64, "files");
    for s in series {
        bar.set_message(s.key.clone());
        bar.inc(1);
        let labelled = corpus::label(&s, &labels, &labels_path)?;
        let scores = match &args.results {
            Some(dir) => {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                corpus::read_results(&corpus::results_path(dir, &name, &s), &s)?
            }
            // before the hold, which starts at the reporting threshold chosen below
            None => detector::scores(&spec, &s.t_us, &s.values),
        };
        files.push(File {
            series: s,
            labelled,
            scores,
        });
    }
    bar.finish_and_clear();
    // graywatch's own scores: held from the reporting threshold, then written
    let reported = if args.results.is_none() {
        let pairs: Vec<(&Labelled, &[f64])> = files
            .iter()
            .map(|f| (&f.labelled, f.scores.as_slice()))
            .collect();
        let reported = detector::reporting_threshold(&pairs, &PROFILES[0]);
        for f in &mut files {
            f.scores = detector::hold(&f.scores, reported);
            if let Some(out) = &args.out {
                corpus::write_results(out, DETECTOR, &f.series, &f.scores)?;
            }
        }
        Some(reported)
    } else {
        None
    };
    let pairs: Vec<(&Labelled, &[f64])> = files
        .iter()
        .map(|f| (&f.labelled, f.scores.as_slice()))
        .collect();
    let results: Vec<ProfileResult> = PROFILES
        .iter()
        .map(|p| rules::evaluate(&pairs, p))
        .collect();
    let detector = match &args.results {
        Some(dir) => dir.display().to_string(),
        None => DETECTOR.to_owned(),
    };
    let text = report(&detector, &files, &results, reported, args.files);
    let mut stdout = crate::pipeline::jsonl::JsonLines::open(None)?;
    stdout.write_raw(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn fmt_score(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"))
}

/// The printed table: profiles, categories, and (with `per_file`) files.
fn report(
    detector: &str,
    files: &[File],
    results: &[ProfileResult],
    reported: Option<f64>,
    per_file: bool,
) -> String {
    let windows: usize = files.iter().map(|f| f.labelled.windows.len()).sum();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "NAB: {detector} on {} files, {windows} anomaly windows\n",
        files.len()
    );
    let _ = writeln!(
        out,
        "{:<20} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "profile", "threshold", "detected", "FP rows", "raw", "null", "perfect", "score"
    );
    for r in results {
        let mut total = FileScore::default();
        r.files.iter().for_each(|f| total.add(f));
        let _ = writeln!(
            out,
            "{:<20} {:>10.6} {:>9} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>7}",
            r.profile.name,
            r.threshold,
            format!("{}/{}", total.windows_detected, total.windows),
            total.fp,
            r.raw,
            r.null,
            r.perfect,
            fmt_score(r.normalized()),
        );
    }
    // categories: each profile's files at its corpus threshold
    let mut categories: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        categories.entry(f.series.category()).or_default().push(i);
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>5} {:>8} {:>9} {:>8} {:>9} {:>19} {:>19}",
        "category",
        "files",
        "windows",
        "detected",
        "FP rows",
        "standard",
        PROFILES[1].name,
        PROFILES[2].name
    );
    for (category, members) in &categories {
        let sum = |r: &ProfileResult| {
            let (mut d, mut n) = (FileScore::default(), FileScore::default());
            for &i in members {
                d.add(&r.files[i]);
                n.add(&r.null_files[i]);
            }
            let perfect: usize = members
                .iter()
                .map(|&i| files[i].labelled.windows.len())
                .sum();
            let score = rules::normalized(d.score, n.score, r.profile.tp_weight * perfect as f64);
            (d, score)
        };
        let (standard, s0) = sum(&results[0]);
        let (_, s1) = sum(&results[1]);
        let (_, s2) = sum(&results[2]);
        let windows: usize = members
            .iter()
            .map(|&i| files[i].labelled.windows.len())
            .sum();
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>8} {:>9} {:>8} {:>9} {:>19} {:>19}",
            category,
            members.len(),
            windows,
            format!("{}/{}", standard.windows_detected, standard.windows),
            standard.fp,
            fmt_score(s0),
            fmt_score(s1),
            fmt_score(s2),
        );
    }
    if per_file {
        let _ = writeln!(
            out,
            "\n{:<56} {:>8} {:>9} {:>8} {:>9}",
            "file (standard profile)", "windows", "detected", "FP rows", "raw"
        );
        for (i, f) in files.iter().enumerate() {
            let s = &results[0].files[i];
            let _ = writeln!(
                out,
                "{:<56} {:>8} {:>9} {:>8} {:>9.3}",
                f.series.key,
                f.labelled.windows.len(),
                format!("{}/{}", s.windows_detected, s.windows),
                s.fp,
                s.score
            );
        }
    }
    let _ = writeln!(
        out,
        "\nscore: 100 × (raw − null) ÷ (perfect − null), NAB's normalisation; one threshold per \
         profile for the whole corpus"
    );
    if let Some(reported) = reported {
        let _ = writeln!(
            out,
            "reported from {reported:.3}: a row scoring at least this is reported and the next {} \
             rows are held at 0 (the threshold with the best standard score when each is \
             scored with its own hold)",
            detector::HOLD_VALUES
        );
    }
    out
}
