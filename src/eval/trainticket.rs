//! `graywatch eval trainticket`: root-cause ranking on real microservice traces with injected
//! faults (the Nezha TrainTicket layout: one-minute span CSVs and a fault list).
//!
//! The spans of every trace file, in time order, become flow records (the `spans-csv`
//! parser: one record per parent → child span pair across services) and go through the
//! pipeline of the given config as one input. For each fault of the list, the root-cause
//! candidates are those of the `spreading-degradation` findings (see
//! `detect::signatures::root_cause`) in the windows from the injection time to
//! [`FAULT_SPAN`] after it, each candidate's scores summed over those windows, each window's
//! weighted by how improbable its strongest deviation was ([`rank_fault`]); the fault's
//! service is the injected pod's name without its two generated suffixes
//! (`ts-contacts-service-866bd68c97-xcqfx` → `ts-contacts-service`). Reported: the rank of
//! the right service per fault, top-1 and top-3 over all faults and per fault type, and the
//! findings in the fault-free file(s) (names starting with `normal`).
//!
//! Fault list: `{"<hour>": [{"inject_time": "2023-01-29 08:43:04", "inject_pod": "…",
//! "inject_type": "cpu_contention|exception|return"}, …], …}`; `inject_time` is read as UTC,
//! the clock of the spans (its `inject_timestamp` is eight hours off).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ingest::LineParser;
use ingest::spans::SpansCsvParser;
use schemas::{FlowBatchBuilder, Signature};
use serde::Deserialize;

use crate::eval::collect::run_batches;

/// How long after its injection a fault's effect is looked for, µs (the Nezha layout gives
/// three minutes of traces per fault).
pub const FAULT_SPAN: i64 = 180_000_000;

/// One injected fault, as the fault list gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    /// Injection time, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub inject_time: String,
    /// The pod the fault was injected into.
    pub inject_pod: String,
    /// `cpu_contention`, `exception`, `return`, …
    pub inject_type: String,
}

impl Fault {
    /// The service of the injected pod.
    pub fn service(&self) -> String {
        let parts: Vec<&str> = self.inject_pod.rsplitn(3, '-').collect();
        if parts.len() == 3 {
            parts[2].to_owned()
        } else {
            self.inject_pod.clone()
        }
    }

    /// The injection time, µs since the epoch.
    ///
    /// # Errors
    /// A time not in `YYYY-MM-DD HH:MM:SS`.
    pub fn at_us(&self) -> anyhow::Result<i64> {
        let t = humantime::parse_rfc3339(&format!("{}Z", self.inject_time.replace(' ', "T")))
            .with_context(|| format!("fault inject_time {:?}", self.inject_time))?;
        Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64)
    }
}

/// One fault's outcome.
#[derive(Debug, Clone)]
pub struct FaultResult {
    /// The fault.
    pub fault: Fault,
    /// Its service.
    pub truth: String,
    /// Candidates, best first, with summed scores.
    pub ranking: Vec<(String, f64)>,
    /// 1-based rank of the truth among the candidates (`None`: not among them).
    pub rank: Option<usize>,
}

/// The whole evaluation.
#[derive(Debug, Clone)]
pub struct Report {
    /// Per fault, in time order.
    pub faults: Vec<FaultResult>,
    /// Findings in the windows of the fault-free files, by signature.
    pub fault_free_findings: BTreeMap<String, u64>,
    /// Flow records read.
    pub records: u64,
}

impl Report {
    /// Faults whose service ranked in the top `k`.
    pub fn top(&self, k: usize) -> usize {
        self.faults
            .iter()
            .filter(|f| f.rank.is_some_and(|r| r <= k))
            .count()
    }
}

/// Reads the fault list.
///
/// # Errors
/// A file that can't be read or isn't the layout above.
pub fn read_faults(path: &Path) -> anyhow::Result<Vec<Fault>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let by_hour: BTreeMap<String, Vec<Fault>> = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a Nezha fault list", path.display()))?;
    let mut faults: Vec<Fault> = by_hour.into_values().flatten().collect();
    faults.sort_by(|a, b| a.inject_time.cmp(&b.inject_time));
    Ok(faults)
}

/// Runs the evaluation over `traces` with `config` (its `[detect.root-cause]` decides what
/// is ranked).
///
/// # Errors
/// Unreadable files, a bad config, a fault time that doesn't parse.
pub fn evaluate(
    config: &crate::config::Validated,
    faults: &[Fault],
    traces: &[PathBuf],
) -> anyhow::Result<Report> {
    let mut traces = traces.to_vec();
    // time order: fault files are named by minute, fault-free ones `normal_<same layout>`
    traces.sort_by_key(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        name.trim_start_matches("normal_").to_owned()
    });
    let mut parser = SpansCsvParser::new(config.mapping.clone());
    let mut builder = FlowBatchBuilder::new();
    let mut batches = Vec::new();
    let mut records = 0u64;
    let mut normal_ranges: Vec<(i64, i64)> = Vec::new();
    let bar = super::progress(traces.len() as u64, "files");
    for path in &traces {
        bar.inc(1);
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let normal = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("normal"));
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            parser
                .parse_line(line, &mut builder)
                .map_err(|e| anyhow::anyhow!("{}:{}: {}", path.display(), i + 1, e))?;
        }
        // one batch per file (the builder is empty before each)
        if !builder.is_empty() {
            let b = builder.finish();
            if normal {
                let starts = schemas::FlowColumns::try_new(&b)?.start_us.values();
                if let (Some(lo), Some(hi)) = (starts.iter().min(), starts.iter().max()) {
                    normal_ranges.push((*lo, *hi));
                }
            }
            records += b.num_rows() as u64;
            batches.push(b);
        }
    }
    bar.finish_and_clear();
    parser.finish(&mut builder);
    if !builder.is_empty() {
        records += builder.len() as u64;
        batches.push(builder.finish());
    }
    let collected = run_batches(config, batches)?;
    let degradations: Vec<&schemas::Finding> = collected
        .findings
        .iter()
        .filter(|f| f.signature == Signature::SpreadingDegradation)
        .collect();
    let mut out = Vec::new();
    for fault in faults {
        let at = fault.at_us()?;
        let ranking = rank_fault(&degradations, at);
        let truth = fault.service();
        let rank = ranking.iter().position(|(c, _)| *c == truth).map(|i| i + 1);
        out.push(FaultResult {
            fault: fault.clone(),
            truth,
            ranking,
            rank,
        });
    }
    let mut fault_free_findings = BTreeMap::new();
    for f in &collected.findings {
        if normal_ranges
            .iter()
            .any(|&(lo, hi)| f.window.end_us > lo && f.window.start_us <= hi)
        {
            *fault_free_findings
                .entry(f.signature.as_str().to_owned())
                .or_default() += 1;
        }
    }
    Ok(Report {
        faults: out,
        fault_free_findings,
        records,
    })
}

/// The ranked root-cause candidates of a fault injected at `at_us` (µs since the epoch): the
/// candidates of the `degradations` (spreading-degradation findings) whose window overlaps
/// `[at_us, at_us + FAULT_SPAN)`, each candidate's scores summed over those windows, each
/// window's weighted by its finding's `inbound_deviation` (−log10 P of its strongest
/// deviation; 1 when it has none). Best first; ties by name.
pub fn rank_fault(degradations: &[&schemas::Finding], at_us: i64) -> Vec<(String, f64)> {
    let mut scores: BTreeMap<String, f64> = BTreeMap::new();
    for f in degradations
        .iter()
        .filter(|f| f.window.end_us > at_us && f.window.start_us < at_us + FAULT_SPAN)
    {
        // a window of noise-level deviations (whose best candidate also scores 1) counts
        // less than a window of improbable ones
        let weight = f
            .evidence
            .iter()
            .find(|e| e.signal == "inbound_deviation")
            .map_or(1.0, |e| e.value);
        for r in f.related.iter().filter(|r| r.role == "candidate") {
            *scores.entry(r.name.clone()).or_default() += weight * r.score.unwrap_or(0.0);
        }
    }
    let mut ranking: Vec<(String, f64)> = scores.into_iter().collect();
    ranking.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranking
}

/// The report as text: one line per fault, then the totals.
pub fn render(r: &Report) -> String {
    let mut s = String::from(
        "fault time           type            service                        rank  top candidates\n",
    );
    for f in &r.faults {
        s += &format!(
            "{:<20} {:<15} {:<30} {:>4}  {}\n",
            f.fault.inject_time,
            f.fault.inject_type,
            f.truth,
            f.rank.map_or("-".to_owned(), |x| x.to_string()),
            f.ranking
                .iter()
                .take(3)
                .map(|(c, x)| format!("{c} ({x:.2})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let n = r.faults.len().max(1);
    s += &format!(
        "\nfaults {}   top-1 {} ({:.1} %)   top-3 {} ({:.1} %)   (Nezha, traces+logs+metrics: 86.7 % / 97.8 %)\n",
        r.faults.len(),
        r.top(1),
        100.0 * r.top(1) as f64 / n as f64,
        r.top(3),
        100.0 * r.top(3) as f64 / n as f64
    );
    let mut by_type: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for f in &r.faults {
        let e = by_type.entry(&f.fault.inject_type).or_default();
        e.0 += 1;
        e.1 += usize::from(f.rank == Some(1));
        e.2 += usize::from(f.rank.is_some_and(|x| x <= 3));
    }
    for (t, (n, t1, t3)) in by_type {
        s += &format!("  {t:<15} {n:>3} faults   top-1 {t1}   top-3 {t3}\n");
    }
    let ff: u64 = r.fault_free_findings.values().sum();
    s += &format!(
        "findings in the fault-free file(s): {ff}{}\n",
        if ff == 0 {
            String::new()
        } else {
            format!(" ({:?})", r.fault_free_findings)
        }
    );
    s += &format!("flow records: {}\n", r.records);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spreading-degradation finding of the window starting `k` × 10 s after `t0`, whose
    /// strongest deviation is `deviation` (−log10 P), with its candidates' scores.
    fn degradation(
        t0: i64,
        k: i64,
        deviation: f64,
        candidates: &[(&str, f64)],
    ) -> schemas::Finding {
        use detect::signatures::{counted, finding, related};
        let start_us = t0 + k * 10_000_000;
        finding(
            Signature::SpreadingDegradation,
            schemas::Subject::Landscape,
            schemas::Window {
                start_us,
                end_us: start_us + 10_000_000,
            },
            schemas::Severity::Warning,
            vec![counted("inbound_deviation", deviation, 0.0, "-log10 P")],
            candidates
                .iter()
                .map(|(c, s)| related("candidate", c, Some(*s), String::new()))
                .collect(),
            schemas::Confidence::Normal,
            String::new(),
        )
    }

    #[test]
    fn a_window_of_improbable_deviations_outweighs_windows_of_noise() {
        let at = 1_674_999_114_000_000;
        let found = [
            // two windows where only noise deviates (P ≈ 1 %): order first in each
            degradation(at, 0, 2.0, &[("order", 1.0), ("contacts", 0.2)]),
            degradation(at, 1, 2.5, &[("order", 1.0)]),
            // one window of a strong deviation into contacts (P ≈ 1e-9)
            degradation(at, 2, 9.0, &[("contacts", 1.0), ("order", 0.5)]),
            // after the fault's span: not counted
            degradation(at, 18, 20.0, &[("seat", 1.0)]),
        ];
        let refs: Vec<&schemas::Finding> = found.iter().collect();
        let ranking = rank_fault(&refs, at);
        let names: Vec<&str> = ranking.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["contacts", "order"]);
        // contacts 2 × 0.2 + 9 × 1; order 2 × 1 + 2.5 × 1 + 9 × 0.5
        assert!((ranking[0].1 - 9.4).abs() < 1e-9, "{ranking:?}");
        assert!((ranking[1].1 - 9.0).abs() < 1e-9, "{ranking:?}");
    }

    #[test]
    fn a_fault_names_its_service_and_time() {
        let f = Fault {
            inject_time: "2023-01-29 08:43:04".into(),
            inject_pod: "ts-contacts-service-866bd68c97-xcqfx".into(),
            inject_type: "return".into(),
        };
        assert_eq!(f.service(), "ts-contacts-service");
        // 2023-01-29T08:43:04Z
        assert_eq!(f.at_us().unwrap(), 1_674_981_784_000_000);
    }
}
