//! Opening inputs, choosing each one's parser, and driving them through `ingest::read_lines`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ingest::{Format, IngestSink, IngestStats, LineParser, Mapping, ReaderOptions};
use schemas::FlowBatchBuilder;

use crate::InputArgs;

/// One opened input.
struct Opened {
    name: String,
    reader: Box<dyn BufRead>,
}

fn open(path: &PathBuf) -> anyhow::Result<Opened> {
    if path.as_os_str() == "-" {
        return Ok(Opened {
            name: "-".into(),
            reader: Box::new(BufReader::with_capacity(1 << 18, std::io::stdin())),
        });
    }
    let f = File::open(path).with_context(|| format!("cannot read input {}", path.display()))?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        bail!("cannot read input {}: is a directory", path.display());
    }
    Ok(Opened {
        name: path.display().to_string(),
        reader: Box::new(BufReader::with_capacity(1 << 18, f)),
    })
}

/// Runs every input through its parser into `sink`; returns what was read.
///
/// All inputs are checked to be readable before the first is read, so a typo in the last
/// path fails fast. Parsers are kept per format across inputs (a spans join can cross files)
/// and finished after the last input.
pub fn drive(
    args: &InputArgs,
    mapping: &Mapping,
    sink: &mut dyn IngestSink,
    progress: &ProgressBar,
) -> anyhow::Result<(IngestStats, Vec<(&'static str, u64)>)> {
    let fixed: Option<Format> = match args.format.as_str() {
        "auto" => None,
        f => Some(f.parse().context("--format")?),
    };
    let mut opened = args
        .inputs
        .iter()
        .map(open)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = ReaderOptions {
        max_line_bytes: args.max_line_bytes,
        ..ReaderOptions::default()
    };
    let mut parsers: Vec<(Format, Box<dyn LineParser>)> = Vec::new();
    let mut builder = FlowBatchBuilder::new();
    let mut stats = IngestStats::default();
    for input in &mut opened {
        let format = match &fixed {
            Some(f) => f.clone(),
            None => {
                let head = input
                    .reader
                    .fill_buf()
                    .with_context(|| format!("reading {}", input.name))?;
                Format::sniff(head).with_context(|| {
                    format!(
                        "{}: cannot tell the log format from its first line; pass --format",
                        input.name
                    )
                })?
            }
        };
        tracing::info!(input = %input.name, ?format, "reading");
        let index = match parsers.iter().position(|(f, _)| *f == format) {
            Some(i) => i,
            None => {
                let parser = format.parser(mapping).context("--format")?;
                parsers.push((format, parser));
                parsers.len() - 1
            }
        };
        let base = stats.bytes;
        let mut tracked = Tracked {
            inner: sink,
            progress,
            base,
        };
        ingest::read_lines(
            &input.name,
            &mut input.reader,
            parsers[index].1.as_mut(),
            &mut builder,
            &opts,
            &mut stats,
            &mut tracked,
        )?;
    }
    let mut counters = Vec::new();
    for (_, parser) in &mut parsers {
        ingest::finish(parser.as_mut(), &mut builder, &mut stats, sink)?;
        counters.extend(parser.counters());
    }
    Ok((stats, counters))
}

/// Forwards to the real sink and moves the progress bar.
struct Tracked<'a> {
    inner: &'a mut dyn IngestSink,
    progress: &'a ProgressBar,
    base: u64,
}

impl IngestSink for Tracked<'_> {
    fn batch(&mut self, batch: arrow::array::RecordBatch) -> ingest::Result<()> {
        self.inner.batch(batch)
    }
    fn reject(&mut self, rejected: &ingest::RejectedLine<'_>) -> ingest::Result<()> {
        self.inner.reject(rejected)
    }
    fn progress(&mut self, bytes: u64) {
        self.progress.set_position(self.base + bytes);
    }
}

/// A progress bar over the inputs' total size, drawn only when stderr is a terminal.
pub fn progress_bar(args: &InputArgs) -> ProgressBar {
    let total: u64 = args
        .inputs
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}",
        )
        .expect("valid progress template"),
    );
    bar
}

/// Writes rejected lines as JSON lines.
#[derive(serde::Serialize)]
pub struct RejectDoc<'a> {
    /// Input name.
    pub input: &'a str,
    /// 1-based line number.
    pub line: u64,
    /// Reason class.
    pub reason: &'static str,
    /// What was wrong.
    pub detail: &'a str,
    /// The line, lossily decoded.
    pub text: String,
}

impl<'a> From<&'a ingest::RejectedLine<'a>> for RejectDoc<'a> {
    fn from(r: &'a ingest::RejectedLine<'a>) -> Self {
        RejectDoc {
            input: r.input,
            line: r.line_no,
            reason: r.reject.reason.as_str(),
            detail: &r.reject.detail,
            text: String::from_utf8_lossy(r.line).into_owned(),
        }
    }
}

/// "1,234,567" for summaries.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The summary lines about input: lines, records, rejects by reason, parser counters.
pub fn summarize_input(
    stats: &IngestStats,
    counters: &[(&'static str, u64)],
    elapsed: std::time::Duration,
) -> String {
    let secs = elapsed.as_secs_f64();
    let mut s = format!(
        "  lines     {} ({:.1} MB) in {:.2} s ({} lines/s)\n  records   {}\n",
        thousands(stats.lines),
        stats.bytes as f64 / 1e6,
        secs,
        thousands((stats.lines as f64 / secs.max(1e-9)) as u64),
        thousands(stats.records),
    );
    let reasons: Vec<String> = stats
        .rejects
        .iter()
        .map(|(r, n)| format!("{r} {}", thousands(*n)))
        .collect();
    s += &format!("  rejected  {}", thousands(stats.rejected()));
    if !reasons.is_empty() {
        s += &format!(" ({})", reasons.join(", "));
    }
    s += "\n";
    if stats.blank_lines > 0 {
        s += &format!("  blank     {}\n", thousands(stats.blank_lines));
    }
    for (name, n) in counters {
        s += &format!("  {name}: {}\n", thousands(*n));
    }
    s
}
