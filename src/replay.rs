//! `graywatch replay`: files or stdin → windows → findings → commands, as JSON lines.

use std::path::PathBuf;
use std::time::Instant;

use actuate::Actuator;
use anyhow::Context;
use clap::Args;
use detect::{ClosedWindow, Detector};
use ingest::{IngestSink, RejectedLine};

use crate::InputArgs;
use crate::input::{self, RejectDoc, thousands};
use crate::output::{JsonLines, open_or};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Write window aggregates (pair-window and node-window documents) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    windows: Option<PathBuf>,
    /// Don't write window aggregates at all (only findings, commands and alerts).
    #[arg(long, conflicts_with = "windows")]
    no_windows: bool,
    /// Write findings to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    findings: Option<PathBuf>,
    /// Write remediation commands to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    commands: Option<PathBuf>,
    /// Write alerts (trigger/resolve) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    alerts: Option<PathBuf>,
    /// Print no summary on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Counts for the summary.
#[derive(Default)]
struct Counts {
    windows: u64,
    pairs: u64,
    nodes: u64,
    findings: std::collections::BTreeMap<&'static str, u64>,
    commands: u64,
    alerts: u64,
    /// Per pair over the whole run, for the summary's busiest pairs.
    pair_totals: std::collections::HashMap<(String, String), PairTotal>,
}

/// One pair's totals over the run.
#[derive(Default)]
struct PairTotal {
    requests: u64,
    errors: u64,
    /// The worst window's p99, µs.
    worst_p99_us: u64,
}

/// How many pairs the summary lists.
const BUSIEST_PAIRS: usize = 5;

impl Counts {
    fn add_pairs(&mut self, pairs: &[schemas::PairWindow]) {
        for p in pairs.iter().filter(|p| p.requests > 0) {
            let total = match self
                .pair_totals
                .get_mut(&(p.source.clone(), p.destination.clone()))
            {
                Some(t) => t,
                None => self
                    .pair_totals
                    .entry((p.source.clone(), p.destination.clone()))
                    .or_default(),
            };
            total.requests += p.requests;
            total.errors += p.errors;
            total.worst_p99_us = total.worst_p99_us.max(p.latency.map_or(0, |l| l.p99_us));
        }
    }

    /// The busiest pairs, one line each: requests, error ratio, worst window p99.
    fn busiest(&self) -> String {
        let mut pairs: Vec<_> = self.pair_totals.iter().collect();
        pairs.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
        let mut s = String::new();
        for ((source, destination), t) in pairs.into_iter().take(BUSIEST_PAIRS) {
            s += &format!(
                "    {source} -> {destination}: {} requests, {:.1} % errors, worst p99 {:.1} ms\n",
                thousands(t.requests),
                100.0 * t.errors as f64 / t.requests as f64,
                t.worst_p99_us as f64 / 1000.0
            );
        }
        s
    }
}

struct Pipeline {
    detector: Detector,
    actuator: Actuator,
    stdout: JsonLines,
    windows: Option<JsonLines>,
    write_windows: bool,
    findings: Option<JsonLines>,
    commands: Option<JsonLines>,
    alerts: Option<JsonLines>,
    rejects: Option<JsonLines>,
    counts: Counts,
    /// The first downstream error, kept whole (the ingest error only carries its text).
    failure: Option<anyhow::Error>,
}

impl Pipeline {
    fn emit(&mut self, closed: Vec<ClosedWindow>) -> anyhow::Result<()> {
        for w in closed {
            self.counts.windows += 1;
            self.counts.pairs += w.pairs.len() as u64;
            self.counts.add_pairs(&w.pairs);
            self.counts.nodes += w.nodes.len() as u64;
            if self.write_windows {
                let out = self.windows.as_mut().unwrap_or(&mut self.stdout);
                for p in &w.pairs {
                    out.write(p)?;
                }
                for n in &w.nodes {
                    out.write(n)?;
                }
            }
            for f in &w.findings {
                *self
                    .counts
                    .findings
                    .entry(f.signature.as_str())
                    .or_default() += 1;
                self.findings
                    .as_mut()
                    .unwrap_or(&mut self.stdout)
                    .write(f)?;
            }
            let actions = self.actuator.on_window(w.window, &w.findings);
            for c in &actions.commands {
                self.counts.commands += 1;
                self.commands
                    .as_mut()
                    .unwrap_or(&mut self.stdout)
                    .write(c)?;
            }
            for a in &actions.alerts {
                self.counts.alerts += 1;
                self.alerts.as_mut().unwrap_or(&mut self.stdout).write(a)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        for out in [
            Some(&mut self.stdout),
            self.windows.as_mut(),
            self.findings.as_mut(),
            self.commands.as_mut(),
            self.alerts.as_mut(),
            self.rejects.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            out.flush()?;
        }
        Ok(())
    }
}

impl IngestSink for Pipeline {
    fn batch(&mut self, batch: arrow::array::RecordBatch) -> ingest::Result<()> {
        let result = self
            .detector
            .push(&batch)
            .context("detect")
            .and_then(|closed| self.emit(closed));
        result.map_err(|e| {
            let text = format!("{e:#}");
            self.failure = Some(e);
            ingest::Error::Downstream(text)
        })
    }

    fn reject(&mut self, rejected: &RejectedLine<'_>) -> ingest::Result<()> {
        tracing::debug!(%rejected, "rejected line");
        if let Some(out) = &mut self.rejects {
            out.write(&RejectDoc::from(rejected))
                .map_err(|e| ingest::Error::Downstream(format!("{e:#}")))?;
        }
        Ok(())
    }
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = crate::config::Config::load(args.input.config.as_deref())?.validate()?;
    let mut pipeline = Pipeline {
        detector: config.detector,
        actuator: config.actuator,
        stdout: JsonLines::open(None)?,
        windows: open_or(&args.windows)?,
        write_windows: !args.no_windows,
        findings: open_or(&args.findings)?,
        commands: open_or(&args.commands)?,
        alerts: open_or(&args.alerts)?,
        rejects: open_or(&args.input.rejects)?,
        counts: Counts::default(),
        failure: None,
    };
    let progress = input::progress_bar(&args.input);
    let driven = input::drive(&args.input, &config.mapping, &mut pipeline, &progress);
    progress.finish_and_clear();
    let (stats, counters) = match driven {
        Ok(v) => v,
        Err(e) => return Err(pipeline.failure.take().unwrap_or(e)),
    };
    let closed = pipeline.detector.flush();
    pipeline.emit(closed)?;
    pipeline.flush()?;
    if !args.quiet {
        let d = pipeline.detector.stats();
        let c = &pipeline.counts;
        let w = &config.detect.window;
        let findings: Vec<String> = c.findings.iter().map(|(k, n)| format!("{k} {n}")).collect();
        eprint!(
            "graywatch replay: {} input(s)\n{}",
            args.input.inputs.len(),
            input::summarize_input(&stats, &counters, started.elapsed())
        );
        eprintln!(
            "  late      {} (beyond the allowed lateness of {})",
            thousands(d.late_records),
            humantime::format_duration(w.allowed_lateness)
        );
        eprintln!(
            "  windows   {} closed ({} each), {} pair and {} node aggregates",
            thousands(c.windows),
            humantime::format_duration(w.length),
            thousands(c.pairs),
            thousands(c.nodes)
        );
        eprintln!(
            "  findings  {}{}",
            c.findings.values().sum::<u64>(),
            if findings.is_empty() {
                String::new()
            } else {
                format!(" ({})", findings.join(", "))
            }
        );
        eprintln!("  commands  {}, alerts {}", c.commands, c.alerts);
        if !c.pair_totals.is_empty() {
            eprint!(
                "  busiest pairs (of {}):\n{}",
                thousands(c.pair_totals.len() as u64),
                c.busiest()
            );
        }
    }
    Ok(())
}
