//! Opening inputs, choosing each one's parser, and driving them through `ingest::read_lines`.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ingest::{Format, IngestSink, IngestStats, LineParser, Mapping, ReaderOptions};
use schemas::FlowBatchBuilder;

use crate::InputArgs;

/// One opened input.
pub struct Opened {
    name: String,
    reader: Box<dyn BufRead>,
}

fn open(path: &Path) -> anyhow::Result<Opened> {
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

/// Opens every input, so that a typo in the last path fails before anything is read or
/// any output file is created.
pub fn open_all(args: &InputArgs) -> anyhow::Result<Vec<Opened>> {
    args.inputs.iter().map(|p| open(p)).collect()
}

/// Fails when an output path is one of the inputs or is given twice: writing would destroy
/// an input, or interleave two streams in one file.
pub fn check_outputs(args: &InputArgs, outputs: &[(&str, &Option<PathBuf>)]) -> anyhow::Result<()> {
    let key = |p: &Path| {
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        parent
            .canonicalize()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let mut seen: Vec<(PathBuf, &str)> = Vec::new();
    for (flag, path) in outputs {
        let Some(path) = path else { continue };
        if path.as_os_str() == "-" {
            continue;
        }
        let k = key(path);
        if args
            .inputs
            .iter()
            .any(|i| i.as_os_str() != "-" && key(i) == k)
        {
            bail!("{flag} {}: is also an input", path.display());
        }
        if let Some((_, other)) = seen.iter().find(|(s, _)| *s == k) {
            bail!("{flag} {}: already given to {other}", path.display());
        }
        seen.push((k, flag));
    }
    Ok(())
}

/// What was read, for the summary.
pub struct InputSummary {
    /// Lines, bytes, records, rejects.
    pub stats: IngestStats,
    /// Parser counters (e.g. spans without parent).
    pub counters: Vec<(&'static str, u64)>,
    /// Each input with the format it was read as (`None` for an empty input).
    pub formats: Vec<(String, Option<String>)>,
}

/// Reads up to the first non-blank line (at most `max` bytes of it) and hands back a reader
/// that yields those bytes again, then the rest: `--format auto` looks at a whole line even
/// when the input arrives in small pieces.
fn peek_first_line(input: &mut Opened, max: usize) -> anyhow::Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let n = (&mut input.reader)
            .take(max as u64)
            .read_until(b'\n', &mut head)
            .with_context(|| format!("reading {}", input.name))?;
        if n == 0 || !head[start..].iter().all(u8::is_ascii_whitespace) || head.len() >= max {
            break;
        }
    }
    let rest = std::mem::replace(&mut input.reader, Box::new(Cursor::new(Vec::new())));
    input.reader = Box::new(BufReader::with_capacity(
        1 << 18,
        Cursor::new(head.clone()).chain(rest),
    ));
    Ok(head)
}

/// Runs every input through its parser into `sink`; returns what was read.
///
/// Parsers are kept per format across inputs (a spans join can cross files) and finished
/// after the last input.
pub fn drive(
    args: &InputArgs,
    mut opened: Vec<Opened>,
    mapping: &Mapping,
    sink: &mut dyn IngestSink,
    progress: &ProgressBar,
) -> anyhow::Result<InputSummary> {
    let opts = ReaderOptions {
        max_line_bytes: args.max_line_bytes,
        ..ReaderOptions::default()
    };
    let mut parsers: Vec<(Format, Box<dyn LineParser>)> = Vec::new();
    let mut builder = FlowBatchBuilder::new();
    let mut stats = IngestStats::default();
    let mut formats = Vec::new();
    // Each input's parser (an index into `parsers`), or None for an empty input.
    let mut parser_of: Vec<Option<usize>> = Vec::with_capacity(opened.len());
    for input in &mut opened {
        let format = match &args.format.0 {
            Some(f) => f.clone(),
            None => {
                let head = peek_first_line(input, args.max_line_bytes)?;
                match Format::sniff(&head) {
                    Some(f) => f,
                    None if head.iter().all(u8::is_ascii_whitespace) => {
                        // Nothing to parse: count its blank lines, if any, and go on.
                        let blank = head.iter().filter(|&&b| b == b'\n').count() as u64;
                        stats.lines +=
                            blank + u64::from(!head.is_empty() && !head.ends_with(b"\n"));
                        stats.blank_lines += blank;
                        stats.bytes += head.len() as u64;
                        formats.push((input.name.clone(), None));
                        parser_of.push(None);
                        continue;
                    }
                    None => bail!(
                        "{}: cannot tell the log format from its first line; pass --format",
                        input.name
                    ),
                }
            }
        };
        tracing::info!(input = %input.name, ?format, "reading");
        formats.push((input.name.clone(), Some(format_name(&format))));
        let index = match parsers.iter().position(|(f, _)| *f == format) {
            Some(i) => i,
            None => {
                let parser = format.parser(mapping).context("--format")?;
                parsers.push((format, parser));
                parsers.len() - 1
            }
        };
        parser_of.push(Some(index));
    }

    // Read in chunks, always from the input furthest behind in event time (as the sink
    // tracks it): logs of several proxies covering the same time interleave, rotated logs of
    // one proxy are read one after another.
    sink.inputs(opened.len());
    let mut positions = vec![ingest::Position::default(); opened.len()];
    let mut done: Vec<bool> = parser_of.iter().map(Option::is_none).collect();
    for (i, _) in done.iter().enumerate().filter(|(_, d)| **d) {
        sink.end_input(i)?;
    }
    while let Some(i) = (0..opened.len())
        .filter(|&i| !done[i])
        .min_by_key(|&i| (sink.input_time(i), i))
    {
        let parser = parsers[parser_of[i].expect("inputs with a parser")]
            .1
            .as_mut();
        let input = &mut opened[i];
        sink.switch_input(i);
        let mut tracked = Tracked {
            inner: sink,
            progress,
            base: stats.bytes - positions[i].bytes,
        };
        let at_end = ingest::read_some_lines(
            &input.name,
            &mut input.reader,
            parser,
            &mut builder,
            &opts,
            &mut stats,
            &mut tracked,
            &mut positions[i],
            CHUNK_LINES,
        )?;
        if !builder.is_empty() {
            sink.batch(builder.finish())?;
        }
        if at_end {
            done[i] = true;
            sink.end_input(i)?;
        }
    }
    let mut counters = Vec::new();
    for (_, parser) in &mut parsers {
        ingest::finish(parser.as_mut(), &mut builder, &mut stats, sink)?;
        counters.extend(parser.counters());
    }
    Ok(InputSummary {
        stats,
        counters,
        formats,
    })
}

/// Lines read from one input before the driver looks again for the input furthest behind.
const CHUNK_LINES: u64 = 8192;

/// The `--format` name of a format.
fn format_name(f: &Format) -> String {
    match f {
        Format::Envoy => "envoy".into(),
        Format::EnvoyJson => "envoy-json".into(),
        Format::Istio => "istio".into(),
        Format::NginxCombined => "nginx-combined".into(),
        Format::NginxIngress => "nginx-ingress".into(),
        Format::Nginx(_) => "nginx:'…'".into(),
        Format::SpansCsv => "spans-csv".into(),
    }
}

/// `--format`: a format name, or `auto` (`None`).
#[derive(Debug, Clone)]
pub struct FormatArg(pub Option<Format>);

/// Parses `--format` for clap, so a bad value is a usage error (exit status 2).
pub fn parse_format(s: &str) -> Result<FormatArg, String> {
    if s == "auto" {
        return Ok(FormatArg(None));
    }
    s.parse::<Format>()
        .map(|f| FormatArg(Some(f)))
        .map_err(|e| e.to_string())
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

/// A progress indicator, drawn only when stderr is a terminal: a bar over the inputs' total
/// size, or a byte counter when an input is stdin (size unknown).
pub fn progress_bar(args: &InputArgs) -> ProgressBar {
    let target = ProgressDrawTarget::stderr();
    if args.inputs.iter().any(|p| p.as_os_str() == "-") {
        let spinner = ProgressBar::with_draw_target(None, target);
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {decimal_bytes} read, {decimal_bytes_per_sec}")
                .expect("valid progress template"),
        );
        spinner.enable_steady_tick(std::time::Duration::from_millis(200));
        return spinner;
    }
    let total: u64 = args
        .inputs
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {decimal_bytes}/{decimal_total_bytes} {wide_bar} {decimal_bytes_per_sec} eta {eta}",
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

/// The summary lines about input: formats, lines, records, rejects by reason, parser counters.
pub fn summarize_input(read: &InputSummary, elapsed: std::time::Duration) -> String {
    let stats = &read.stats;
    let secs = elapsed.as_secs_f64();
    let mut s = String::new();
    let mut formats: Vec<String> = Vec::new();
    for (_, f) in &read.formats {
        let f = f.clone().unwrap_or_else(|| "empty".into());
        if !formats.contains(&f) {
            formats.push(f);
        }
    }
    s += &format!("  format    {}\n", formats.join(", "));
    s += &format!(
        "  lines     {} ({} bytes) in {:.2} s ({} lines/s)\n  records   {}\n",
        thousands(stats.lines),
        thousands(stats.bytes),
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
    if !read.counters.is_empty() {
        let c: Vec<String> = read
            .counters
            .iter()
            .map(|(name, n)| format!("{name} {}", thousands(*n)))
            .collect();
        s += &format!("  parser    {}\n", c.join(", "));
    }
    let parsed = stats.lines - stats.blank_lines;
    if parsed > 0 && stats.rejected() * 2 > parsed {
        s += "  hint      most lines were rejected: is --format right? `graywatch parse` shows \
              each reject's reason; --rejects FILE keeps them\n";
    }
    s
}
