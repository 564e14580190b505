//! `graywatch eval nab` on files of the Numenta Anomaly Benchmark (numenta/NAB, MIT; see
//! tests/data/nab/README.md): NAB's own published scores reproduced by our scorer, and the
//! command's output files and table.

use std::path::{Path, PathBuf};

use graywatch::eval::nab::{corpus, detector, rules};

use crate::util::{graywatch, root, temp_path};

/// Runs `graywatch` and returns its stdout, failing the test with its stderr unless it exits 0.
fn graywatch_ok_text(args: &[&str]) -> String {
    let out = graywatch(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "graywatch {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn nab(rel: &str) -> PathBuf {
    root().join("tests/data/nab").join(rel)
}

fn series(key: &str) -> corpus::Series {
    corpus::read_series(&nab("data").join(key), key).unwrap()
}

fn labelled(s: &corpus::Series) -> rules::Labelled {
    let path = nab("labels/combined_windows.json");
    corpus::label(s, &corpus::read_labels(&path).unwrap(), &path).unwrap()
}

/// NAB's published per-file results of its HTM detector ("numenta") under the standard
/// profile at its corpus threshold (results/numenta/numenta_standard_scores.csv).
#[test]
fn nab_published_scores_of_htm_are_reproduced() {
    const THRESHOLD: f64 = 0.542_187_690_735;
    for (key, score, tp, tn, fp, fn_) in [
        (
            "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
            1.279_566_484_91,
            3,
            3022,
            4,
            399,
        ),
        (
            "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
            -2.0,
            0,
            931,
            0,
            126,
        ),
    ] {
        let s = series(key);
        let l = labelled(&s);
        let results =
            nab("results/numenta").join(corpus::results_path(Path::new(""), "numenta", &s));
        let scores = corpus::read_results(&results, &s).unwrap();
        let r = rules::score_file(
            rules::Scored {
                rules: &l.rules(),
                scores: &scores,
            },
            &rules::STANDARD,
            THRESHOLD,
        );
        assert!((r.score - score).abs() < 1e-9, "{key}: {}", r.score);
        assert_eq!((r.tp, r.tn, r.fp, r.fn_), (tp, tn, fp, fn_), "{key}");
    }
}

#[test]
fn scores_are_online_a_row_never_sees_later_rows() {
    let s = series("realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv");
    let spec = detector::nab_spec();
    let full = detector::scores(&spec, &s.t_us, &s.values);
    for cut in [7, 1000, 3500] {
        // the same rows followed by other values: the scores of the rows before are the same
        let mut values = s.values[..cut].to_vec();
        values.extend(std::iter::repeat_n(1e6, s.values.len() - cut));
        let other = detector::scores(&spec, &s.t_us, &values);
        assert_eq!(other[..cut], full[..cut], "cut at {cut}");
        assert_ne!(other[cut..], full[cut..]);
    }
    assert!(full.iter().all(|a| (0.0..=1.0).contains(a)));
    // warm-up rows score 0
    assert!(full[..spec.warm_up as usize].iter().all(|&a| a == 0.0));
}

#[test]
fn the_jump_of_art_daily_jumpsup_scores_highest_in_its_window() {
    let s = series("artificialWithAnomaly/art_daily_jumpsup.csv");
    let l = labelled(&s);
    let scores = detector::scores(&detector::nab_spec(), &s.t_us, &s.values);
    let probation = rules::probationary_len(s.values.len());
    let top = (probation..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
        .unwrap();
    let w = l.windows[0];
    assert!((w.first..=w.last).contains(&top), "row {top}, window {w:?}");
    // the jump is the first value above 100 in the file
    assert!(s.values[top] > 100.0 && s.values[..top].iter().all(|&x| x < 100.0));
}

#[test]
fn eval_nab_writes_results_and_prints_the_three_profiles() {
    let (dir, out) = temp_path("results");
    let text = graywatch_ok_text(&[
        "eval",
        "nab",
        "tests/data/nab/data",
        "--out",
        out.to_str().unwrap(),
        "--files",
    ]);
    assert!(
        text.starts_with("NAB: graywatch on 3 files, 5 anomaly windows"),
        "{text}"
    );
    for profile in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        assert!(text.contains(&format!("\n{profile} ")), "{text}");
    }
    assert!(text.contains("artificialWithAnomaly"), "{text}");
    // the threshold the written files report from, in thousandths
    let reported: f64 = text
        .split_once("\nreported from ")
        .and_then(|(_, rest)| rest.split_once(':'))
        .map(|(t, _)| t.parse().unwrap())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((0.25..=0.75).contains(&reported), "{reported}");
    let mut held_any = false;
    for key in [
        "artificialWithAnomaly/art_daily_jumpsup.csv",
        "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
        "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
    ] {
        assert!(text.contains(key), "{text}");
        let (category, file) = key.split_once('/').unwrap();
        let written = out.join(category).join(format!("graywatch_{file}"));
        let csv = std::fs::read_to_string(&written).unwrap();
        let input = std::fs::read_to_string(nab("data").join(key)).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
        // every input row, its timestamp and value as written, and a score in [0, 1]
        let mut rows = 0;
        for (line, original) in lines.zip(input.lines().skip(1)) {
            let (row, score) = line.rsplit_once(',').unwrap();
            assert_eq!(row, original);
            let score: f64 = score.parse().unwrap();
            assert!((0.0..=1.0).contains(&score), "{line}");
            rows += 1;
        }
        assert_eq!(rows, input.lines().count() - 1, "{key}");
        // the file scores the same as the library's detector on the same rows, held from
        // the printed threshold
        let s = series(key);
        let raw = detector::scores(&detector::nab_spec(), &s.t_us, &s.values);
        let held = corpus::read_results(&written, &s).unwrap();
        assert_eq!(held, detector::hold(&raw, reported));
        held_any |= held != raw;
    }
    assert!(held_any, "no row held in any file");
    drop(dir);
}

#[test]
fn a_missing_results_file_is_named() {
    // NAB's results hold only two of the three files
    let out = graywatch(&[
        "eval",
        "nab",
        "tests/data/nab/data",
        "--results",
        "tests/data/nab/results/numenta",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("numenta/artificialWithAnomaly/numenta_art_daily_jumpsup.csv"),
        "{stderr}"
    );
}

#[test]
fn eval_nab_needs_an_output_and_reads_its_labels() {
    let out = graywatch(&["eval", "nab", "tests/data/nab/data"]);
    assert_eq!(out.status.code(), Some(2), "--out or --results is required");
    let (_dir, unused) = temp_path("unused");
    let out = graywatch(&[
        "eval",
        "nab",
        "tests/data/nab/data",
        "--out",
        unused.to_str().unwrap(),
        "--labels",
        "no/such/labels.json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/labels.json"));
}
