//! NAB's files: data files (`DATA_DIR/<category>/<file>.csv`, `timestamp,value`), the label
//! file (`combined_windows.json`: `"<category>/<file>.csv": [[first, last], …]`, timestamps of
//! rows of the file), and results files (`<detector>_<file>.csv`: `timestamp,value,
//! anomaly_score`, NAB's `results/<detector>/<category>/` layout).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::rules::{Labelled, Window};

/// Why a NAB file could not be read or written. Every variant is the input's fault (or the
/// file system's) and names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line of a CSV file is not what NAB's format says.
    #[error("{path}: line {line}: {reason}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong, with the offending text.
        reason: String,
    },
    /// The label file is not NAB's JSON.
    #[error("{path}: {source}")]
    Json {
        /// The label file.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
    /// A window of the label file does not fit its data file.
    #[error("{path}: {file}: {reason}")]
    Window {
        /// The label file.
        path: PathBuf,
        /// The data file's key (`<category>/<file>.csv`).
        file: String,
        /// What is wrong, with the offending timestamp.
        reason: String,
    },
    /// A data file has no entry in the label file.
    #[error(
        "{path}: no labels for {file} (every data file needs an entry, [] if it has no anomaly)"
    )]
    Unlabelled {
        /// The label file.
        path: PathBuf,
        /// The data file's key.
        file: String,
    },
}

/// One data file of the corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The file's key in the label file: `<category>/<file>.csv`.
    pub key: String,
    /// Each row's timestamp, as written in the file.
    pub timestamps: Vec<String>,
    /// Each row's timestamp, µs since the Unix epoch (the file's times read as UTC).
    pub t_us: Vec<i64>,
    /// Each row's value, as written in the file.
    pub values_text: Vec<String>,
    /// Each row's value.
    pub values: Vec<f64>,
}

impl Series {
    /// The category (the key's folder), e.g. `realAWSCloudwatch`.
    pub fn category(&self) -> &str {
        self.key.split_once('/').map_or("", |(c, _)| c)
    }

    /// The file name, e.g. `ec2_cpu_utilization_24ae8d.csv`.
    pub fn file_name(&self) -> &str {
        self.key.split_once('/').map_or(&self.key, |(_, f)| f)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CorpusError + '_ {
    move |source| CorpusError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A timestamp `YYYY-MM-DD HH:MM:SS[.ffffff]` (NAB's format; a `T` may stand for the space),
/// read as UTC, in µs since the Unix epoch; `None` if it is not one.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let micros = match text.get(19..) {
        Some("") => 0,
        Some(f)
            if f.starts_with('.') && f.len() > 1 && f[1..].bytes().all(|c| c.is_ascii_digit()) =>
        {
            // the first six digits are µs
            let digits = &f[1..f.len().min(7)];
            digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32)
        }
        _ => return None,
    };
    let seconds = days_from_epoch(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1_000_000 + micros)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar: whole 400-year eras of
/// 146 097 days, then years of the era counted from March (so a leap day ends its year).
fn days_from_epoch(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 days from 0000-03-01 to 1970-01-01
    era * 146_097 + day_of_era - 719_468
}

/// Reads one data file (`timestamp,value` with a header line); `key` is its
/// `<category>/<file>.csv`. Timestamps must not decrease (NAB's files repeat a few, where
/// a clock changed for daylight saving time).
pub fn read_series(path: &Path, key: &str) -> Result<Series, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let bad = |line: usize, reason: String| CorpusError::Csv {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == "timestamp,value" => {}
        Some((_, header)) => {
            return Err(bad(
                1,
                format!("header {header:?}, expected \"timestamp,value\""),
            ));
        }
        None => {
            return Err(bad(
                1,
                "empty file, expected a \"timestamp,value\" header".into(),
            ));
        }
    }
    let mut s = Series {
        key: key.to_owned(),
        timestamps: Vec::new(),
        t_us: Vec::new(),
        values_text: Vec::new(),
        values: Vec::new(),
    };
    for (i, line) in lines {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((t, v)) = line.split_once(',') else {
            return Err(bad(n, format!("{line:?} is not \"timestamp,value\"")));
        };
        let t_us = parse_timestamp(t).ok_or_else(|| bad(n, format!("invalid timestamp {t:?}")))?;
        let x: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| bad(n, format!("invalid value {v:?}")))?;
        if let Some(&before) = s.t_us.last()
            && t_us < before
        {
            return Err(bad(n, format!("timestamp {t:?} is before the row before")));
        }
        s.timestamps.push(t.to_owned());
        s.t_us.push(t_us);
        s.values_text.push(v.trim().to_owned());
        s.values.push(x);
    }
    Ok(s)
}

/// Reads every `DATA_DIR/<category>/<file>.csv` (one level of folders; other files are
/// ignored), sorted by key.
pub fn read_data_dir(dir: &Path) -> Result<Vec<Series>, CorpusError> {
    let mut out = Vec::new();
    for category in sorted_entries(dir)? {
        if !category.is_dir() {
            continue;
        }
        for file in sorted_entries(&category)? {
            if file.extension().is_none_or(|e| e != "csv") || !file.is_file() {
                continue;
            }
            let key = format!(
                "{}/{}",
                category.file_name().unwrap_or_default().to_string_lossy(),
                file.file_name().unwrap_or_default().to_string_lossy()
            );
            out.push(read_series(&file, &key)?);
        }
    }
    Ok(out)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, CorpusError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        out.push(entry.map_err(io(dir))?.path());
    }
    out.sort();
    Ok(out)
}

/// The label file's windows: data file key → `[first, last]` timestamps (text).
pub type WindowLabels = BTreeMap<String, Vec<[String; 2]>>;

/// Reads a label file (`combined_windows.json`).
pub fn read_labels(path: &Path) -> Result<WindowLabels, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|source| CorpusError::Json {
        path: path.to_owned(),
        source,
    })
}

/// The windows of `series` as rows: each window's timestamps must be timestamps of rows of
/// the file (as NAB requires), first ≤ last, and windows must follow one another without
/// sharing a row. `labels_path` names the label file in errors.
pub fn label(
    series: &Series,
    labels: &WindowLabels,
    labels_path: &Path,
) -> Result<Labelled, CorpusError> {
    let Some(windows) = labels.get(&series.key) else {
        return Err(CorpusError::Unlabelled {
            path: labels_path.to_owned(),
            file: series.key.clone(),
        });
    };
    let bad = |reason: String| CorpusError::Window {
        path: labels_path.to_owned(),
        file: series.key.clone(),
        reason,
    };
    let row = |text: &str| -> Result<usize, CorpusError> {
        let t = parse_timestamp(text).ok_or_else(|| bad(format!("invalid timestamp {text:?}")))?;
        // the first row with that time, as NAB's scorer takes it
        let i = series.t_us.partition_point(|&r| r < t);
        (series.t_us.get(i) == Some(&t))
            .then_some(i)
            .ok_or_else(|| bad(format!("timestamp {text:?} is not a row of the data file")))
    };
    let mut out: Vec<Window> = Vec::with_capacity(windows.len());
    for [first, last] in windows {
        let w = Window {
            first: row(first)?,
            last: row(last)?,
        };
        if w.first > w.last {
            return Err(bad(format!(
                "window [{first:?}, {last:?}] ends before it starts"
            )));
        }
        out.push(w);
    }
    out.sort_by_key(|w| w.first);
    if let Some(pair) = out.windows(2).find(|p| p[1].first <= p[0].last) {
        return Err(bad(format!(
            "windows at rows {}..={} and {}..={} overlap",
            pair[0].first, pair[0].last, pair[1].first, pair[1].last
        )));
    }
    Ok(Labelled {
        rows: series.values.len(),
        windows: out,
    })
}

/// The results file of `series` for `detector`: `<category>/<detector>_<file>.csv` (NAB's
/// layout under `results/<detector>/`).
pub fn results_path(dir: &Path, detector: &str, series: &Series) -> PathBuf {
    dir.join(series.category())
        .join(format!("{detector}_{}", series.file_name()))
}

/// The results CSV of a series: `timestamp,value,anomaly_score`, timestamps and values as
/// read, scores in Rust's shortest round-trip form.
pub fn results_csv(series: &Series, scores: &[f64]) -> String {
    let mut out = String::from("timestamp,value,anomaly_score\n");
    for ((t, v), s) in series
        .timestamps
        .iter()
        .zip(&series.values_text)
        .zip(scores)
    {
        let _ = writeln!(out, "{t},{v},{s}");
    }
    out
}

/// Writes the results file of `series` (see [`results_csv`]) under `dir`, creating the
/// category folder; returns its path.
pub fn write_results(
    dir: &Path,
    detector: &str,
    series: &Series,
    scores: &[f64],
) -> Result<PathBuf, CorpusError> {
    let path = results_path(dir, detector, series);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(&path, results_csv(series, scores)).map_err(io(&path))?;
    Ok(path)
}

/// Reads the anomaly scores of `series` from a results file (any columns, one named
/// `anomaly_score`): one row per row of the data file, with the same timestamps, each score
/// in [0, 1].
pub fn read_results(path: &Path, series: &Series) -> Result<Vec<f64>, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let bad = |line: usize, reason: String| CorpusError::Csv {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = lines.next().map_or("", |(_, h)| h);
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let (Some(ts), Some(sc)) = (
        columns.iter().position(|c| *c == "timestamp"),
        columns.iter().position(|c| *c == "anomaly_score"),
    ) else {
        return Err(bad(
            1,
            format!("header {header:?} has no timestamp and anomaly_score columns"),
        ));
    };
    let mut out = Vec::with_capacity(series.t_us.len());
    for (i, line) in lines {
        let n = i + 1;
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(t), Some(s)) = (fields.get(ts), fields.get(sc)) else {
            return Err(bad(
                n,
                format!("{line:?} has fewer columns than the header"),
            ));
        };
        let row = out.len();
        let t_us = parse_timestamp(t).ok_or_else(|| bad(n, format!("invalid timestamp {t:?}")))?;
        if series.t_us.get(row) != Some(&t_us) {
            return Err(bad(
                n,
                format!("timestamp {t:?} is not row {} of {}", row + 1, series.key),
            ));
        }
        let s: f64 = s
            .trim()
            .parse()
            .ok()
            .filter(|s| (0.0..=1.0).contains(s))
            .ok_or_else(|| bad(n, format!("anomaly score {s:?} is not a number in [0, 1]")))?;
        out.push(s);
    }
    if out.len() != series.t_us.len() {
        return Err(bad(
            text.lines().count(),
            format!(
                "{} rows, {} has {}",
                out.len(),
                series.key,
                series.t_us.len()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn timestamps_are_utc_microseconds() {
        assert_eq!(
            parse_timestamp("2014-02-14 14:30:00"),
            Some(1_392_388_200_000_000)
        );
        assert_eq!(
            parse_timestamp("2014-02-14 14:30:00.000000"),
            Some(1_392_388_200_000_000)
        );
        assert_eq!(parse_timestamp("1969-12-31 23:59:59"), Some(-1_000_000));
        assert_eq!(
            parse_timestamp("2000-02-29T00:00:00.5"),
            Some(951_782_400_500_000)
        );
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        // every valid date of 1896 … 2104 is one day after the one before
        let mut before = parse_timestamp("1895-12-31 00:00:00").unwrap();
        for year in 1896..=2104 {
            for month in 1..=12 {
                for day in 1..=31 {
                    if let Some(t) =
                        parse_timestamp(&format!("{year:04}-{month:02}-{day:02} 00:00:00"))
                    {
                        assert_eq!(t - before, 86_400_000_000, "{year}-{month}-{day}");
                        before = t;
                    }
                }
            }
        }
        assert_eq!(before, parse_timestamp("2104-12-31 00:00:00").unwrap());
        assert_eq!(parse_timestamp("2014-02-29 00:00:00"), None);
        assert_eq!(parse_timestamp("2014-02-14 24:00:00"), None);
        assert_eq!(parse_timestamp("2014-02-14 14:30"), None);
        assert_eq!(parse_timestamp("14:30 yesterday, 2014"), None);
    }

    #[test]
    fn results_keep_the_rows_as_written() {
        let (_dir, path) = temp_file(
            "timestamp,value\n2014-02-14 14:30:00,0.132\n2014-02-14 14:35:00,1e3\n2014-02-14 14:40:00,7\n",
        );
        let s = read_series(&path, "cat/x.csv").unwrap();
        assert_eq!(s.values, [0.132, 1000.0, 7.0]);
        assert_eq!((s.category(), s.file_name()), ("cat", "x.csv"));
        assert_eq!(
            results_csv(&s, &[0.0, 0.5, 1.0]),
            "timestamp,value,anomaly_score\n2014-02-14 14:30:00,0.132,0\n\
             2014-02-14 14:35:00,1e3,0.5\n2014-02-14 14:40:00,7,1\n"
        );
        assert_eq!(
            results_path(Path::new("out"), "graywatch", &s),
            Path::new("out/cat/graywatch_x.csv")
        );
    }

    #[test]
    fn bad_rows_are_named_with_their_line() {
        let bad = |text: &str| {
            let (_dir, path) = temp_file(text);
            read_series(&path, "c/x.csv").unwrap_err().to_string()
        };
        let e = bad("time,value\n");
        assert!(
            e.ends_with("line 1: header \"time,value\", expected \"timestamp,value\""),
            "{e}"
        );
        let e = bad("timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:35:00,abc\n");
        assert!(e.ends_with("line 3: invalid value \"abc\""), "{e}");
        let e = bad("timestamp,value\n2014-02-14 14:30:00,1\n2014-02-14 14:25:00,2\n");
        assert!(
            e.ends_with("line 3: timestamp \"2014-02-14 14:25:00\" is before the row before"),
            "{e}"
        );
        let e = bad("timestamp,value\n2014-02-14 14:30:00;1\n");
        assert!(e.contains("line 2: "), "{e}");
        // NAB's files repeat a timestamp where a clock changed: that is not an error
        let (_dir, path) =
            temp_file("timestamp,value\n2014-03-09 03:00:00,1\n2014-03-09 03:00:00,2\n");
        assert_eq!(read_series(&path, "c/x.csv").unwrap().values.len(), 2);
    }

    #[test]
    fn windows_are_rows_of_the_file() {
        let rows: String = (0..10)
            .map(|m| format!("2014-02-14 14:{m:02}:00,{m}\n"))
            .collect();
        let (_dir, path) = temp_file(&format!("timestamp,value\n{rows}"));
        let s = read_series(&path, "c/x.csv").unwrap();
        let labels_path = Path::new("labels.json");
        let labels = |json: &str| -> WindowLabels { serde_json::from_str(json).unwrap() };
        let l = label(
            &s,
            &labels(r#"{"c/x.csv": [["2014-02-14 14:06:00.000000", "2014-02-14 14:08:00"], ["2014-02-14 14:01:00", "2014-02-14 14:02:00"]]}"#),
            labels_path,
        )
        .unwrap();
        assert_eq!(l.rows, 10);
        assert_eq!(
            l.windows,
            [Window { first: 1, last: 2 }, Window { first: 6, last: 8 }]
        );
        let err = |json: &str| {
            label(&s, &labels(json), labels_path)
                .unwrap_err()
                .to_string()
        };
        let e = err(r#"{"c/x.csv": [["2014-02-14 14:06:30", "2014-02-14 14:08:00"]]}"#);
        assert_eq!(
            e,
            "labels.json: c/x.csv: timestamp \"2014-02-14 14:06:30\" is not a row of the data file"
        );
        let e = err(
            r#"{"c/x.csv": [["2014-02-14 14:01:00", "2014-02-14 14:05:00"], ["2014-02-14 14:05:00", "2014-02-14 14:06:00"]]}"#,
        );
        assert!(
            e.ends_with("windows at rows 1..=5 and 5..=6 overlap"),
            "{e}"
        );
        let e = err(r#"{"c/x.csv": [["2014-02-14 14:05:00", "2014-02-14 14:01:00"]]}"#);
        assert!(e.contains("ends before it starts"), "{e}");
        let e = err(r#"{"c/y.csv": []}"#);
        assert!(e.starts_with("labels.json: no labels for c/x.csv"), "{e}");
    }
}
