//! `graywatch replay`: files or stdin → windows → findings → commands, as JSON lines.

use std::path::PathBuf;
use std::time::Instant;

use actuate::Actuator;
use anyhow::Context;
use arrow::array::{Array, AsArray};
use clap::Args;
use detect::pair::Dropped;
use detect::{ClosedWindow, Detector};
use ingest::{IngestSink, RejectedLine};

use crate::InputArgs;
use crate::input::{self, RejectDoc, thousands};
use crate::output::{FirstFailure, JsonLines, open_or};

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
    /// Late records whose duration was at least the allowed lateness.
    late_slow: u64,
    /// Per pair over the whole run, for the summary's busiest pairs.
    pair_totals: std::collections::HashMap<(String, String), PairTotal>,
}

/// One pair's totals over the run.
#[derive(Default)]
struct PairTotal {
    requests: u64,
    errors: u64,
    /// The worst window's p99, µs (`None` while no window had latency).
    worst_p99_us: Option<u64>,
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
            if let Some(l) = p.latency {
                total.worst_p99_us = Some(total.worst_p99_us.map_or(l.p99_us, |w| w.max(l.p99_us)));
            }
        }
    }

    /// The busiest pairs, one line each: requests, error ratio, worst window p99.
    fn busiest(&self) -> String {
        let mut pairs: Vec<_> = self.pair_totals.iter().collect();
        pairs.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
        let mut s = String::new();
        for ((source, destination), t) in pairs.into_iter().take(BUSIEST_PAIRS) {
            let p99 = match t.worst_p99_us {
                Some(us) => format!("worst p99 {:.1} ms", us as f64 / 1000.0),
                None => "no latency in this format".into(),
            };
            s += &format!(
                "    {source} -> {destination}: {} requests, {:.1} % errors, {p99}\n",
                thousands(t.requests),
                100.0 * t.errors as f64 / t.requests as f64,
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
    failure: FirstFailure,
    /// The allowed lateness, µs: late records at least this slow are counted apart.
    lateness_us: u64,
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

impl Pipeline {
    /// Counts the records of `batch` that detection did not aggregate (late, or beyond the
    /// event-time bound) and writes each to the reject file with its reason.
    fn report_dropped(&mut self, batch: &arrow::array::RecordBatch) -> anyhow::Result<()> {
        let dropped = self.detector.dropped_rows();
        if dropped.is_empty() {
            return Ok(());
        }
        let durations = batch
            .column_by_name(schemas::flow::columns::DURATION)
            .and_then(|c| {
                c.as_primitive_opt::<arrow::datatypes::UInt64Type>()
                    .cloned()
            });
        for &(row, why) in dropped {
            if why == Dropped::Late {
                let slow = durations.as_ref().is_some_and(|d| {
                    d.is_valid(row as usize) && d.value(row as usize) >= self.lateness_us
                });
                self.counts.late_slow += u64::from(slow);
            }
        }
        let Some(out) = &mut self.rejects else {
            return Ok(());
        };
        let records = schemas::flow_records(batch)?;
        for &(row, why) in self.detector.dropped_rows() {
            let (reason, detail) = match why {
                Dropped::Late => (
                    "late",
                    "its window had closed: the watermark was past its end",
                ),
                Dropped::Future => (
                    "future",
                    "starts more than a day after this machine's clock",
                ),
            };
            out.write(&DroppedDoc {
                reason,
                detail,
                record: &records[row as usize],
            })?;
        }
        Ok(())
    }
}

/// A parsed record that detection did not aggregate, as written to the reject file.
#[derive(serde::Serialize)]
struct DroppedDoc<'a> {
    reason: &'static str,
    detail: &'static str,
    record: &'a schemas::FlowRecord,
}

impl IngestSink for Pipeline {
    fn batch(&mut self, batch: arrow::array::RecordBatch) -> ingest::Result<()> {
        let result = self
            .detector
            .push(&batch)
            .context("detect")
            .and_then(|closed| {
                self.report_dropped(&batch)?;
                // Closed windows reach readers now, not when a 64 KiB buffer fills: a reader of
                // `tail -f access.log | graywatch replay -` sees each window as it closes.
                let any = !closed.is_empty();
                self.emit(closed)?;
                if any { self.flush() } else { Ok(()) }
            });
        result.map_err(|e| self.failure.keep(e))
    }

    fn inputs(&mut self, count: usize) {
        self.detector.set_inputs(count);
    }

    fn switch_input(&mut self, index: usize) {
        self.detector.set_input(index);
    }

    fn end_input(&mut self, index: usize) -> ingest::Result<()> {
        let closed = self.detector.end_input(index);
        let any = !closed.is_empty();
        let result = self
            .emit(closed)
            .and_then(|()| if any { self.flush() } else { Ok(()) });
        result.map_err(|e| self.failure.keep(e))
    }

    fn input_time(&self, index: usize) -> Option<i64> {
        self.detector.input_newest(index)
    }

    fn reject(&mut self, rejected: &RejectedLine<'_>) -> ingest::Result<()> {
        tracing::debug!(%rejected, "rejected line");
        let written = match &mut self.rejects {
            Some(out) => out.write(&RejectDoc::from(rejected)),
            None => Ok(()),
        };
        written.map_err(|e| self.failure.keep(e))
    }
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config_path = args.input.config.as_deref();
    let config = crate::config::Config::load(config_path)?.validate(config_path)?;
    let inputs = input::open_all(&args.input)?;
    input::check_outputs(
        &args.input,
        &[
            ("--windows", &args.windows),
            ("--findings", &args.findings),
            ("--commands", &args.commands),
            ("--alerts", &args.alerts),
            ("--rejects", &args.input.rejects),
        ],
    )?;
    let mut detector = config.detector;
    // The one clock read of a run: records more than a day ahead of it are not believed.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(i64::MAX, |d| {
            i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
        });
    detector.set_not_after(now_us.saturating_add(NOT_AFTER_MARGIN_US));
    let w = &config.detect.window;
    let mut pipeline = Pipeline {
        detector,
        actuator: config.actuator,
        stdout: JsonLines::open(None)?,
        windows: open_or(&args.windows)?,
        write_windows: !args.no_windows,
        findings: open_or(&args.findings)?,
        commands: open_or(&args.commands)?,
        alerts: open_or(&args.alerts)?,
        rejects: open_or(&args.input.rejects)?,
        counts: Counts::default(),
        failure: FirstFailure::default(),
        lateness_us: u64::try_from(w.allowed_lateness.as_micros()).unwrap_or(u64::MAX),
    };
    let progress = input::progress_bar(&args.input);
    let driven = input::drive(
        &args.input,
        inputs,
        &config.mapping,
        &mut pipeline,
        &progress,
    );
    progress.finish_and_clear();
    let read = match driven {
        Ok(v) => v,
        Err(e) => return Err(pipeline.failure.or(e)),
    };
    let closed = pipeline.detector.flush();
    pipeline.emit(closed)?;
    pipeline.flush()?;
    if !args.quiet {
        let d = pipeline.detector.stats();
        let c = &pipeline.counts;
        let findings: Vec<String> = c.findings.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let mut s = format!(
            "graywatch replay: {} input(s)\n{}",
            args.input.inputs.len(),
            input::summarize_input(&read, started.elapsed())
        );
        s += &format!(
            "  late      {} (beyond the allowed lateness of {})\n",
            thousands(d.late_records),
            humantime::format_duration(w.allowed_lateness)
        );
        if d.late_records > 0 && d.late_records * 100 >= read.stats.records.max(1) {
            let lateness = humantime::format_duration(w.allowed_lateness);
            s += &format!(
                "  hint      {} of the late records took {lateness} or longer: proxies log a \
                 request when it completes, so keep [detect.window] allowed-lateness above \
                 their timeout (--rejects FILE lists every late record)\n",
                thousands(c.late_slow),
            );
        }
        if d.future_records > 0 {
            s += &format!(
                "  future    {} (start more than a day after this machine's clock; not aggregated)\n",
                thousands(d.future_records)
            );
        }
        if d.clamped_records > 0 {
            s += &format!(
                "  clamped   {} (in flight over more than {} windows: counted in the first {})\n",
                thousands(d.clamped_records),
                detect::pair::MAX_SPAN_WINDOWS,
                detect::pair::MAX_SPAN_WINDOWS
            );
        }
        s += &format!(
            "  windows   {} closed ({} each), {} pair and {} node aggregates\n",
            thousands(c.windows),
            humantime::format_duration(w.length),
            thousands(c.pairs),
            thousands(c.nodes)
        );
        s += &format!(
            "  findings  {}{}\n",
            c.findings.values().sum::<u64>(),
            if findings.is_empty() {
                String::new()
            } else {
                format!(" ({})", findings.join(", "))
            }
        );
        s += &format!("  commands  {}, alerts {}\n", c.commands, c.alerts);
        if !c.pair_totals.is_empty() {
            s += &format!(
                "  busiest pairs (of {}):\n{}",
                thousands(c.pair_totals.len() as u64),
                c.busiest()
            );
        }
        say!("{s}");
    }
    Ok(())
}

/// Records may start at most this far ahead of the machine's clock, µs (one day).
const NOT_AFTER_MARGIN_US: i64 = 86_400_000_000;
