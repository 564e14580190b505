//! `graywatch report`: the pipeline of `replay` over files, drawn as one self-contained HTML
//! page (no network: styles and the one small script are inline, plots are SVG).
//!
//! The page has the landscape graph (services in layers by call depth, pairs as edges, both
//! coloured by the findings that touch them), the timeline of each incident (*evidence →
//! finding → command → revoke or expiry → resolved*), and per-pair time series of rate, p99
//! latency and error ratio with their baseline bands (baseline ± 2σ, as the detectors saw
//! them) for the pairs of findings first, then the busiest. [`Report`] collects what the page
//! needs as an [`Outputs`]; [`html::render`] writes it.

pub mod archived;
pub mod html;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use schemas::{Alert, AuditRecord, Finding, NodeWindow, PairWindow, RemediationCommand, Window};

use crate::golden::pair_rows;
use crate::pipeline::jsonl::{JsonLinesConfig, JsonLinesError, JsonLinesOutputs};
use crate::pipeline::{DeadLetter, Outputs, Pipeline, WindowTables};
use crate::replay::input::Streams;
use crate::replay::{InputArgs, cores, drive, input, parsers, progress_bar, say};

/// `graywatch report`'s options.
#[derive(Debug, Args)]
#[command(mut_arg("inputs", |a| a.required(false).required_unless_present("archive")))]
pub struct ReportArgs {
    /// Inputs and config, as for `replay`.
    #[command(flatten)]
    pub input: InputArgs,
    /// Draw the windows, findings and commands of an archive (`replay --archive DIR`, or
    /// `run`'s `[archive]`) instead of replaying inputs.
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub archive: Option<PathBuf>,
    /// With --archive: the first window drawn, RFC 3339 (`2026-12-03T14:00:00Z`).
    #[arg(long, value_name = "TIME", requires = "archive", value_parser = rfc3339_us)]
    pub since: Option<i64>,
    /// With --archive: windows starting at or after TIME are not drawn.
    #[arg(long, value_name = "TIME", requires = "archive", value_parser = rfc3339_us)]
    pub until: Option<i64>,
    /// The HTML file to write.
    #[arg(long, short = 'o', value_name = "FILE", default_value = "report.html")]
    pub out: PathBuf,
    /// Pairs drawn as time series: those of findings first, then the busiest.
    #[arg(long, default_value_t = 12, value_name = "N")]
    pub pairs: usize,
    /// Threads that parse (as `replay --threads`). Default: the machine's cores.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Print nothing on stderr but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// An RFC 3339 time as µs since the epoch.
fn rfc3339_us(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{e}: expected an RFC 3339 time, e.g. 2026-12-03T14:00:00Z"))?;
    let us = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "before 1970".to_owned())?
        .as_micros();
    i64::try_from(us).map_err(|_| "too far ahead".to_owned())
}

/// Most pairs whose time series are kept while reading (the page draws `--pairs` of them);
/// the graph keeps every pair's totals.
pub const SERIES_PAIRS: usize = 2_000;

/// One window of one pair: its values and, where the pair had one, its baselines (value,
/// σ) as the detectors judged the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// Window start, µs since the epoch.
    pub start_us: i64,
    /// Requests per second.
    pub rate_rps: f64,
    /// Rate baseline and σ, req/s.
    pub rate_baseline: Option<(f64, f64)>,
    /// p99 latency, µs (none without durations).
    pub p99_us: Option<u64>,
    /// p99 baseline and σ, µs.
    pub p99_baseline: Option<(f64, f64)>,
    /// Errors ÷ requests.
    pub error_ratio: f64,
    /// Error-ratio baseline and σ.
    pub error_baseline: Option<(f64, f64)>,
}

/// A pair's totals over the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairTotal {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Worst window p99, µs.
    pub worst_p99_us: Option<u64>,
}

/// One incident: the findings of one signature on one subject, with what was done.
#[derive(Debug, Clone)]
pub struct Incident {
    /// Its dedup key (`<signature>/<subject key>`, `rule/<name>/<subject key>`).
    pub key: String,
    /// The first finding (its evidence opened the incident).
    pub first: Finding,
    /// The window of its last finding.
    pub last: Window,
    /// Findings (one per window it stayed open).
    pub windows: u64,
    /// The highest score of its findings.
    pub peak_score: f64,
    /// Alerts (trigger, resolve), in order.
    pub alerts: Vec<Alert>,
    /// Commands sent for it (issue, renew, revoke), in order.
    pub commands: Vec<RemediationCommand>,
    /// The actuator's decisions on its commands (including refusals by a rail, expiry).
    pub audit: Vec<AuditRecord>,
}

/// What the page shows, collected from the pipeline's outputs.
pub struct Report {
    /// Windows closed.
    pub windows: Vec<Window>,
    /// Every pair's totals.
    pub totals: BTreeMap<(String, String), PairTotal>,
    /// Per pair, its windows (at most [`SERIES_PAIRS`] pairs).
    pub series: HashMap<(String, String), Vec<Point>>,
    /// Incidents by key, in the order they opened.
    pub incidents: Vec<Incident>,
    by_key: HashMap<String, usize>,
    /// Lines and records not used, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Requests that started in each window, by window start (µs).
    requests: HashMap<i64, u64>,
    rejects: JsonLinesOutputs,
}

impl Report {
    fn new(rejects: JsonLinesOutputs) -> Self {
        Report {
            windows: Vec::new(),
            totals: BTreeMap::new(),
            series: HashMap::new(),
            incidents: Vec::new(),
            by_key: HashMap::new(),
            rejected: BTreeMap::new(),
            requests: HashMap::new(),
            rejects,
        }
    }

    /// Drops the last windows where no request started (the window an idle input closes
    /// holds only requests still in flight): drawn, they look like traffic stopped.
    fn trim_quiet_end(&mut self) {
        while let Some(w) = self.windows.last() {
            if self.requests.get(&w.start_us).copied().unwrap_or(0) > 0 {
                break;
            }
            let start = w.start_us;
            self.windows.pop();
            for points in self.series.values_mut() {
                points.retain(|p| p.start_us != start);
            }
            self.series.retain(|_, points| !points.is_empty());
        }
    }

    fn incident(&mut self, key: &str) -> Option<&mut Incident> {
        self.by_key.get(key).map(|&i| &mut self.incidents[i])
    }
}

/// An incident's key, as alerts and command reasons give it.
pub fn incident_key(f: &Finding) -> String {
    let (signature, subject) = detect::incident::Incidents::key(f);
    format!("{signature}/{subject}")
}

impl Outputs for Report {
    type Error = JsonLinesError;

    fn pair_window(&mut self, _: &PairWindow) -> Result<(), JsonLinesError> {
        Ok(()) // the totals come from the tables, as from an archive
    }

    fn node_window(&mut self, _: &NodeWindow) -> Result<(), JsonLinesError> {
        Ok(())
    }

    fn wants_tables(&self) -> bool {
        true
    }

    fn window_tables(&mut self, t: &WindowTables) -> Result<(), JsonLinesError> {
        for row in pair_rows(&t.pairs) {
            *self.requests.entry(t.window.start_us).or_default() += row.requests;
            let key = (row.source.clone(), row.destination.clone());
            let total = self.totals.entry(key.clone()).or_default();
            total.requests += row.requests;
            total.errors += row.errors;
            if let Some(p99) = row.latency_us[2] {
                total.worst_p99_us = Some(total.worst_p99_us.map_or(p99, |w| w.max(p99)));
            }
            if self.series.len() >= SERIES_PAIRS && !self.series.contains_key(&key) {
                continue;
            }
            let band = |signal: &str| {
                row.baseline(signal)
                    .and_then(|c| Some((c.baseline?, c.sigma.unwrap_or(0.0))))
            };
            let point = Point {
                start_us: t.window.start_us,
                rate_rps: row.rate_rps,
                rate_baseline: band("rate_rps"),
                p99_us: row.latency_us[2],
                p99_baseline: band("p99_us"),
                error_ratio: if row.requests == 0 {
                    0.0
                } else {
                    row.errors as f64 / row.requests as f64
                },
                error_baseline: band("error_ratio"),
            };
            self.series.entry(key).or_default().push(point);
        }
        Ok(())
    }

    fn finding(&mut self, f: &Finding) -> Result<(), JsonLinesError> {
        let key = incident_key(f);
        if let Some(i) = self.incident(&key) {
            i.last = f.window;
            i.windows += 1;
            i.peak_score = i.peak_score.max(f.score);
        } else {
            self.by_key.insert(key.clone(), self.incidents.len());
            self.incidents.push(Incident {
                key,
                first: f.clone(),
                last: f.window,
                windows: 1,
                peak_score: f.score,
                alerts: Vec::new(),
                commands: Vec::new(),
                audit: Vec::new(),
            });
        }
        Ok(())
    }

    fn command(&mut self, c: &RemediationCommand) -> Result<(), JsonLinesError> {
        if let Some(i) = self.incident(&c.reason.incident) {
            i.commands.push(c.clone());
        }
        Ok(())
    }

    fn alert(&mut self, a: &Alert) -> Result<(), JsonLinesError> {
        if let Some(i) = self.incident(&a.dedup_key) {
            i.alerts.push(a.clone());
        }
        Ok(())
    }

    fn audit(&mut self, a: &AuditRecord) -> Result<(), JsonLinesError> {
        if let Some(i) = self.incident(&a.reason.incident) {
            i.audit.push(a.clone());
        }
        Ok(())
    }

    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), JsonLinesError> {
        *self.rejected.entry(d.reason.to_owned()).or_default() += 1;
        self.rejects.dead_letter(d)
    }

    fn window_closed(&mut self, window: Window) -> Result<(), JsonLinesError> {
        self.windows.push(window);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), JsonLinesError> {
        self.rejects.flush()
    }
}

/// `graywatch report`.
///
/// # Errors
/// As `replay`: a bad config, an input that can't be read; the page that can't be written.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if args.archive.is_none() && (args.since.is_some() || args.until.is_some()) {
        anyhow::bail!(
            "--since and --until pick windows of an archive (--archive DIR); a replay draws its inputs whole"
        );
    }
    if let Some(dir) = &args.archive {
        let mut report = Report::new(JsonLinesOutputs::open(&JsonLinesConfig::default())?);
        let range = archived::Range {
            since_us: args.since,
            until_us: args.until,
        };
        let rows = archived::read(dir, range, &mut report)?;
        if report.windows.is_empty() {
            anyhow::bail!(
                "{}: no window in the archive{}",
                dir.display(),
                if args.since.is_some() || args.until.is_some() {
                    " between --since and --until"
                } else {
                    ""
                }
            );
        }
        write_page(&args, &mut report, &[format!("archive {}", dir.display())])?;
        if !args.quiet {
            say(&format!(
                "graywatch report: {} pair window(s) in {} window(s) of {}, {} pair(s), {} incident(s) in {:.2} s: {}\n",
                crate::replay::thousands(rows),
                report.windows.len(),
                dir.display(),
                report.totals.len(),
                report.incidents.len(),
                started.elapsed().as_secs_f64(),
                args.out.display()
            ));
        }
        return Ok(());
    }
    let config_path = args.input.config.as_deref();
    let config = crate::config::Config::load(config_path)?.validate(config_path)?;
    let streams = Streams::default();
    let mut inputs = input::open_all(&args.input.inputs, &streams)?;
    input::check_outputs(
        &inputs,
        &[
            ("--out", &Some(args.out.clone())),
            ("--rejects", &args.input.rejects),
        ],
        false,
    )?;
    let parsers = parsers(&args.input, &mut inputs, &config.mapping, &streams)?;
    // dead letters go to --rejects when given; nothing else is written as JSON lines
    let rejects = JsonLinesOutputs::open(&JsonLinesConfig {
        rejects: args.input.rejects.as_deref(),
        ..JsonLinesConfig::default()
    })?;
    let mut report = Report::new(rejects);
    let mut pipeline = Pipeline::new(&config, crate::not_after_now());
    let progress = progress_bar(&inputs);
    let read = drive(
        &args.input,
        inputs,
        parsers,
        &streams,
        &config.runtime,
        &mut pipeline,
        &mut report,
        &progress,
        args.threads.map_or_else(cores, usize::from),
        None,
    )
    .map_err(|e| match e {
        crate::replay::DriveError::Stage(crate::pipeline::StageError::Output(e)) => {
            anyhow::Error::from(e)
        }
        other => anyhow::Error::from(other),
    })?;
    progress.finish_and_clear();
    report.flush()?;
    let inputs: Vec<String> = args
        .input
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    write_page(&args, &mut report, &inputs)?;
    if read.stats.records == 0 {
        let rejected: u64 = report.rejected.values().sum();
        say(&format!(
            "graywatch report: warning: no record was read ({} line(s) not used{}): the page has nothing to draw; check --format (`graywatch parse` shows why lines are refused)\n",
            crate::replay::thousands(rejected),
            report
                .rejected
                .iter()
                .map(|(r, n)| format!(", {n} {r}"))
                .collect::<String>()
        ));
    }
    if !args.quiet {
        say(&format!(
            "graywatch report: {} record(s) in {} window(s), {} pair(s), {} incident(s) in {:.2} s: {}\n",
            crate::replay::thousands(read.stats.records),
            report.windows.len(),
            report.totals.len(),
            report.incidents.len(),
            started.elapsed().as_secs_f64(),
            args.out.display()
        ));
    }
    Ok(())
}

/// Renders `report` (drawn from `sources`) to `--out`; `-` is stdout.
fn write_page(args: &ReportArgs, report: &mut Report, sources: &[String]) -> anyhow::Result<()> {
    report.trim_quiet_end();
    let page = html::render(report, sources, args.pairs);
    if args.out.as_os_str() == "-" {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        return match out.write_all(page.as_bytes()).and_then(|()| out.flush()) {
            // a reader that stopped early (`| head`) ends it quietly
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(|e| anyhow::anyhow!("stdout: {e}")),
        };
    }
    std::fs::write(&args.out, page).map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))
}
