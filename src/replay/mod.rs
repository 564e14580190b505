//! The `replay` driver: files or stdin → the [`Pipeline`] → JSON lines, with a summary.
//!
//! Inputs are read in chunks, always from the one furthest behind in event time (logs of
//! several proxies covering the same time interleave; rotated logs of one proxy are read one
//! after the other). Each input has its own watermark. A stream (stdin, a pipe) is read by a
//! thread: when it is quiet, the rows parsed so far go through after `flush-after`, and after
//! `idle-timeout` it stops holding the watermark back; the other inputs go on meanwhile.

pub mod input;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::RecordBatch;
use clap::Args;
use detect::pair::OTHER;
use detect::store::{PairMap, PairRef};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ingest::parallel::{ChunkReader, InFlight, ParsePool};
use ingest::{
    Format, IngestSink, IngestStats, LineParser, LineReader, ReadError, ReadStatus, ReaderOptions,
    RejectedLine,
};

use crate::pipeline::jsonl::{JsonLinesConfig, JsonLinesOutputs};
use crate::pipeline::local::Local;
use crate::pipeline::{
    Aggregate, DeadLetter, Exchange, FlowBatch, InputId, Outputs, Payload, Pipeline, Removal,
    Stage, StageError, threaded,
};
use input::{Opened, Source, Streams};

/// Input options shared by `replay` and `parse`.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Log format: auto, envoy, envoy-json, istio, nginx-combined (alias nginx),
    /// nginx-ingress, nginx:'<log_format>' (any NGINX log_format, verbatim, as in
    /// nginx.conf), spans-csv, flow-json. `auto` looks at the first non-blank line of each
    /// input.
    #[arg(long, short = 'f', default_value = "auto", value_name = "FORMAT", value_parser = parse_format)]
    pub format: FormatArg,
    /// Config file (TOML): service mapping, windows, detector thresholds, patterns.
    /// See deploy/examples/graywatch.toml.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write every rejected line (input, line, reason, detail, text) and every record that
    /// could not be aggregated (late, future, ahead) as a JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Longest accepted line, bytes (at least 1024); longer lines are rejected
    /// (line-too-long).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES", value_parser = line_limit)]
    pub max_line_bytes: usize,
    /// Input files; `-` reads stdin. `replay` reads them in turns, always from the one
    /// furthest behind in event time, so logs of several proxies covering the same time and
    /// rotated logs of one proxy can be given together, in any order. `parse` reads them one
    /// after another.
    #[arg(required = true, value_name = "FILE")]
    pub inputs: Vec<PathBuf>,
}

/// `replay`'s own options.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Inputs and config.
    #[command(flatten)]
    pub input: InputArgs,
    /// Write window aggregates (pair-window and node-window documents) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub windows: Option<PathBuf>,
    /// Don't write window aggregates at all (only findings, commands and alerts).
    #[arg(long, conflicts_with = "windows")]
    pub no_windows: bool,
    /// Write findings to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub findings: Option<PathBuf>,
    /// Write remediation commands to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub commands: Option<PathBuf>,
    /// Write alerts (trigger/resolve) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub alerts: Option<PathBuf>,
    /// Write the audit of the actuator's decisions (each command issued, proposed, renewed,
    /// refused by a safety rail, revoked or expired) to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// Also archive each closed window's tables (pairs, nodes, breakdown) and findings as
    /// Parquet files under DIR, partitioned by hour, for `graywatch query`.
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,
    /// Serve the live landscape map (`/map`) and the golden-signal metrics (`/metrics`) on
    /// HOST:PORT (e.g. 127.0.0.1:9464; port 0 picks one) while replaying, and after the end
    /// until Ctrl-C.
    #[arg(long, value_name = "HOST:PORT")]
    pub serve: Option<std::net::SocketAddr>,
    /// Threads that parse: regular files in formats read line by line (all but spans-csv)
    /// are cut into chunks parsed on N threads while another aggregates, and (when every
    /// input is a regular file) one more closes windows: detection and writing (a window of
    /// thousands of pairs is judged on a thread of its own while its window aggregates are
    /// written on N threads); 1 does it all on one thread. The output is the same for every
    /// N. Such a file of at least 1 MiB, unmodified for a minute, is mapped in memory rather
    /// than read (a file still being written is read: a mapped file truncated by a rotation
    /// would end the run). Default: the machine's cores.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Print no summary on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The machine's cores (1 when it can't be told): `--threads`' default.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The least `--max-line-bytes`, bytes: shorter than one default-format Envoy or Istio line
/// with a user agent, so a smaller limit would reject most lines of real logs (or cut the
/// line `--format auto` looks at).
pub const MIN_LINE_BYTES: usize = 1024;

/// Parses `--max-line-bytes`: at least [`MIN_LINE_BYTES`].
fn line_limit(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n < MIN_LINE_BYTES => Err(format!("must be at least {MIN_LINE_BYTES}")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `--format`: a format name, or `auto` (`None`).
#[derive(Debug, Clone)]
pub struct FormatArg(pub Option<Format>);

/// Parses `--format` for clap, so a bad value is a usage error (exit status 2).
///
/// # Errors
/// The format is unknown or its `log_format` doesn't compile.
pub fn parse_format(s: &str) -> Result<FormatArg, String> {
    if s == "auto" {
        return Ok(FormatArg(None));
    }
    s.parse::<Format>()
        .map(|f| FormatArg(Some(f)))
        .map_err(|e| e.to_string())
}

/// Writes `text` to stderr, ignoring errors: a closed stderr must not abort the run
/// (`eprintln!` panics then).
pub fn say(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Why the start of an input (`head`, as `--format auto` reads it) is no log of one request
/// per line, when it shows: gzip's magic bytes, or a first line of `max` bytes or more (no
/// line end within `--max-line-bytes`). `None` when it looks like text lines.
fn not_lines(head: &[u8], max: usize) -> Option<String> {
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(
            ": it is gzip-compressed (decompress it, e.g. `zcat FILE | graywatch replay -`)"
                .to_owned(),
        );
    }
    let last = head.rsplit(|&b| b == b'\n').next().unwrap_or(head);
    (last.len() >= max).then(|| {
        format!(
            ": it is longer than --max-line-bytes ({max} bytes). A log of one request per line? \
             (a binary file, or lines ended by \\r alone, read as one line); else raise \
             --max-line-bytes"
        )
    })
}

/// The hint for a run whose parsed lines were mostly rejected: about line lengths when most
/// were too long (the parser never saw them, so `--format` can't be blamed), else about the
/// format.
fn rejects_hint(stats: &IngestStats) -> Option<&'static str> {
    let parsed = stats.lines - stats.blank_lines;
    if parsed == 0 || stats.rejected() * 2 <= parsed {
        return None;
    }
    let too_long = stats
        .rejects
        .get(&ingest::RejectReason::LineTooLong)
        .copied()
        .unwrap_or(0);
    Some(if too_long * 2 > parsed {
        "  hint      most lines were longer than --max-line-bytes (rejected before any parsing, \
         whatever the --format): is the input a log of one request per line? (not a \
         compressed or binary file, nor one with lines ended by \\r alone); else raise \
         --max-line-bytes\n"
    } else {
        "  hint      most lines were rejected: is --format right? `graywatch parse` shows each \
         reject's reason; --rejects FILE keeps them\n"
    })
}

/// Lines read from one input before the driver looks again for the input furthest behind.
const CHUNK_LINES: u64 = 8192;

/// Each input's format and parser (an index into the parsers).
pub struct Parsers {
    /// One per input (`None`: an empty input, nothing to parse).
    pub of_input: Vec<Option<usize>>,
    /// The parsers, with their format; the inputs that use each.
    pub parsers: Vec<(Format, Box<dyn LineParser>, Vec<usize>)>,
    /// Each input's name and format name (`None` for an empty input), for summaries.
    pub formats: Vec<(String, Option<String>)>,
    /// Lines and bytes of empty inputs (counted in the stats).
    pub stats: IngestStats,
    /// The service mapping the parsers were built with (for more of them: one per chunk
    /// parsed at once, see [`ingest::parallel`]).
    pub mapping: ingest::Mapping,
}

/// Sniffs (or takes `--format`) each input's format and builds its parser: one per input (its
/// own `[[mapping.inputs]]` writer), shared per format for formats that join lines across
/// inputs (spans).
///
/// # Errors
/// An input whose format can't be told; a `log_format` that doesn't compile.
pub fn parsers(
    args: &InputArgs,
    inputs: &mut [Opened],
    mapping: &ingest::Mapping,
    streams: &Streams,
) -> anyhow::Result<Parsers> {
    let mut out = Parsers {
        of_input: Vec::new(),
        parsers: Vec::new(),
        formats: Vec::new(),
        stats: IngestStats::default(),
        mapping: mapping.clone(),
    };
    for i in 0..inputs.len() {
        let name = inputs[i].name.clone();
        let format = match &args.format.0 {
            Some(f) => f.clone(),
            None => {
                let head = input::peek_first_line(inputs, i, args.max_line_bytes, streams)?;
                match Format::sniff(&head) {
                    Some(f) => f,
                    None if head.iter().all(u8::is_ascii_whitespace) => {
                        // Nothing to parse: count its blank lines, if any, and go on.
                        let blank = head.iter().filter(|&&b| b == b'\n').count() as u64;
                        out.stats.lines +=
                            blank + u64::from(!head.is_empty() && !head.ends_with(b"\n"));
                        out.stats.blank_lines += blank;
                        out.stats.bytes += head.len() as u64;
                        out.formats.push((name, None));
                        out.of_input.push(None);
                        continue;
                    }
                    None => anyhow::bail!(
                        "{name}: cannot tell the log format from its first line{}",
                        not_lines(&head, args.max_line_bytes)
                            .unwrap_or_else(|| "; pass --format".to_owned())
                    ),
                }
            }
        };
        tracing::info!(input = %name, format = format.name(), "reading");
        out.formats
            .push((name.clone(), Some(format.name().to_owned())));
        let shared = format.holds_records();
        let index = match out
            .parsers
            .iter()
            .position(|(f, _, _)| shared && *f == format)
        {
            Some(p) => p,
            None => {
                let parser = format
                    .parser_for(mapping, &name, None)
                    .context("--format")?;
                out.parsers.push((format, parser, Vec::new()));
                out.parsers.len() - 1
            }
        };
        out.parsers[index].2.push(i);
        out.of_input.push(Some(index));
    }
    Ok(out)
}

/// Hands one input's batches to stage 1 and its rejects to stage 2's outputs.
struct Feed<'a, X: ?Sized> {
    agg: &'a mut Aggregate,
    x: &'a mut X,
    input: &'a InputId,
    positions: Vec<i64>,
    progress: &'a ProgressBar,
    /// Bytes of the inputs read before this one.
    base: u64,
}

impl<'a, X: ?Sized> Feed<'a, X> {
    fn new(
        agg: &'a mut Aggregate,
        x: &'a mut X,
        input: &'a InputId,
        progress: &'a ProgressBar,
        base: u64,
    ) -> Self {
        Feed {
            agg,
            x,
            input,
            positions: Vec::new(),
            progress,
            base,
        }
    }
}

impl<X: Exchange + ?Sized> IngestSink for Feed<'_, X> {
    type Error = StageError<X::Error>;

    fn batch(&mut self, batch: RecordBatch, lines: &[u64]) -> Result<(), Self::Error> {
        self.positions.clear();
        self.positions
            .extend(lines.iter().map(|&l| i64::try_from(l).unwrap_or(i64::MAX)));
        Stage::<X>::process(
            self.agg,
            self.input,
            FlowBatch {
                batch: &batch,
                positions: Some(&self.positions),
            },
            self.x,
        )
    }

    fn reject(&mut self, r: &RejectedLine<'_>) -> Result<(), Self::Error> {
        tracing::debug!(rejected = %r, "rejected line");
        self.x
            .dead_letter(&DeadLetter {
                input: self.input,
                position: i64::try_from(r.line_no).ok(),
                reason: r.reject.reason.as_str(),
                detail: &r.reject.detail,
                payload: Payload::Bytes(r.line),
                key: None,
                headers: &[],
            })
            .map_err(StageError::Output)
    }

    fn progress(&mut self, bytes: u64) {
        self.progress.set_position(self.base + bytes);
    }
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

/// Per-input reading state of the driver.
struct Reading {
    id: InputId,
    lines: LineReader,
    /// A file parsed on the pool's threads: its chunks, in flight and read.
    chunks: Option<Chunked>,
    done: bool,
    /// When the input last delivered bytes (streams), processing time.
    last_data: Instant,
    idle: bool,
}

/// A file input parsed on the [`ParsePool`]'s threads (see [`ingest::parallel`]).
struct Chunked {
    name: Arc<str>,
    reader: ChunkReader,
    inflight: InFlight<ingest::parallel::Parsed>,
    /// Parsers not in use (each chunk in flight holds one).
    spare: Vec<Box<dyn LineParser>>,
    /// Chunk buffers not in use.
    buffers: Vec<Vec<u8>>,
    /// How the file is cut: `None` until its first chunk.
    source: Option<ChunkSource>,
    /// The whole file has been cut into chunks.
    cut: bool,
}

/// Where a file's chunks come from.
enum ChunkSource {
    /// The file mapped in memory (see [`input::FileInput::map_rest`]), cut from `at`; the
    /// lines before `parsed` went through, the pages before `released` left the resident
    /// memory.
    Mapped {
        map: Arc<input::MappedFile>,
        at: usize,
        parsed: usize,
        released: usize,
    },
    /// Reads of the file into the chunks' buffers.
    Read,
}

/// Chunks in flight per input parsed on threads, for each thread: enough that a thread never
/// waits for the driver to cut the next one, even while the driver closes a window (the
/// judge's work comes in bursts). 4 against 2: flow-json at -j2 0.89 s against 1.00 s
/// (medians of 7), 25 MB more resident (8 is no faster).
const CHUNKS_PER_THREAD: usize = 4;

/// Runs every input through its parser into `pipeline`, in turns (see the [module
/// docs](self)); returns what was read.
///
/// With `threads` above 1, regular files in formats that keep nothing from one line to the
/// next are cut into chunks of the lines a turn reads and parsed on `threads` worker threads,
/// while this thread aggregates; when every input is a regular file, stage 2 (closing
/// windows: detection, actuation, writing) runs on a thread of its own
/// ([`crate::pipeline::threaded`]). The results are the same as with one thread: the chunks
/// reach the pipeline in the same turns, and stage 2 gets stage 1's output in the order it
/// was made. The pipeline is flushed (every window closed) at the end.
///
/// # Errors
/// An input that can't be read (named); the outputs' error, whole.
#[allow(clippy::too_many_arguments)] // the run's collaborators, each needed here
pub fn drive<O: Outputs + Send>(
    args: &InputArgs,
    mut inputs: Vec<Opened>,
    mut parsers: Parsers,
    streams: &Streams,
    runtime: &crate::config::RuntimeConfig,
    pipeline: &mut Pipeline,
    out: &mut O,
    progress: &ProgressBar,
    threads: usize,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<InputSummary, DriveError<O::Error>> {
    let opts = ReaderOptions {
        max_line_bytes: args.max_line_bytes,
        ..ReaderOptions::default()
    };
    let mut stats = std::mem::take(&mut parsers.stats);
    let now = Instant::now();
    let pool = (threads > 1).then(|| ParsePool::new(threads));
    let depth = threads * CHUNKS_PER_THREAD;
    // (no input is given twice: `input::open_all` refuses it)
    let mut reading: Vec<Reading> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let threaded = pool.is_some()
                && matches!(input.source, Source::File(_))
                && parsers.of_input[i].is_some_and(|p| !parsers.parsers[p].0.holds_records());
            Reading {
                id: InputId::new(&input.name),
                lines: LineReader::new(input.name.clone()),
                chunks: threaded.then(|| Chunked {
                    name: input.name.as_str().into(),
                    reader: ChunkReader::new(args.max_line_bytes),
                    inflight: InFlight::default(),
                    spare: Vec::new(),
                    buffers: Vec::new(),
                    source: None,
                    cut: false,
                }),
                done: false,
                last_data: now,
                idle: false,
            }
        })
        .collect();
    for (i, r) in reading.iter_mut().enumerate() {
        Stage::<O>::add_input(pipeline, &r.id, None).map_err(DriveError::Stage)?;
        if parsers.of_input[i].is_none() {
            r.done = true;
            pipeline
                .remove_input(&r.id, Removal::Ended, out)
                .map_err(DriveError::Stage)?;
        }
    }
    // with parse threads, and regular files only (no stream waits on the judge's clock), stage
    // 2 runs on a thread of its own: a window's close no longer stops the aggregation
    let apart = pool.is_some()
        && stop.is_none()
        && inputs.iter().all(|i| matches!(i.source, Source::File(_)));
    let Pipeline { aggregate, judge } = pipeline;
    let t = Turns {
        inputs: &mut inputs,
        reading: &mut reading,
        parsers: &mut parsers,
        stats: &mut stats,
        streams,
        runtime,
        opts: &opts,
        pool: pool.as_ref(),
        depth,
        stop,
        progress,
    };
    if apart {
        let (mut to_judge, from) = threaded::channel();
        std::thread::scope(|s| {
            let judging = std::thread::Builder::new()
                .name("judge".into())
                .spawn_scoped(s, || threaded::judge_thread(judge, out, from))
                .expect("a thread can be started");
            let read = turns(t, aggregate, &mut to_judge);
            if read.is_ok() {
                // a failed send means the judge stopped: its error is the one reported
                let _ = to_judge.end();
            } else {
                drop(to_judge);
            }
            let judged = judging
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            match (read, judged) {
                (_, Err(e)) => Err(DriveError::Stage(e)),
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) => Err(e.map_stage(|e| match e {
                    StageError::Output(threaded::JudgeStopped) => {
                        unreachable!("the judge stops early only with an error")
                    }
                    StageError::Batch { input, source } => StageError::Batch { input, source },
                    StageError::State { what, source } => StageError::State { what, source },
                })),
            }
        })?;
    } else {
        let mut local = Local {
            judge: &mut *judge,
            out: &mut *out,
        };
        turns(t, aggregate, &mut local).map_err(|e| e.map_stage(StageError::flatten))?;
        judge.flush(out).map_err(DriveError::Stage)?;
    }
    // each counter summed over the parsers (one per input, and those of the threads)
    let mut counters: Vec<(&'static str, u64)> = Vec::new();
    let threads_parsers = reading
        .iter()
        .filter_map(|r| r.chunks.as_ref())
        .flat_map(|c| &c.spare);
    for parser in parsers.parsers.iter().map(|p| &p.1).chain(threads_parsers) {
        for (name, n) in parser.counters() {
            match counters.iter_mut().find(|(c, _)| *c == name) {
                Some((_, total)) => *total += n,
                None => counters.push((name, n)),
            }
        }
    }
    Ok(InputSummary {
        stats,
        counters,
        formats: parsers.formats,
    })
}

/// What the driver's turns read and update, whichever way stage 2 runs.
struct Turns<'a> {
    inputs: &'a mut [Opened],
    reading: &'a mut [Reading],
    parsers: &'a mut Parsers,
    stats: &'a mut IngestStats,
    streams: &'a Streams,
    runtime: &'a crate::config::RuntimeConfig,
    opts: &'a ReaderOptions,
    pool: Option<&'a ParsePool>,
    /// Chunks in flight per input at most.
    depth: usize,
    stop: Option<&'a std::sync::atomic::AtomicBool>,
    progress: &'a ProgressBar,
}

/// The driver's turns (see [`drive`]) until every input has ended: stage 1 (`agg`) here,
/// stage 2 behind `x`.
fn turns<X: Judging>(
    t: Turns<'_>,
    agg: &mut Aggregate,
    x: &mut X,
) -> Result<(), DriveError<X::Error>> {
    let Turns {
        inputs,
        reading,
        parsers,
        stats,
        streams,
        runtime,
        opts,
        pool,
        depth,
        stop,
        progress,
    } = t;
    // bytes read per input, for the progress bar
    let mut read_bytes = vec![0u64; inputs.len()];
    let mut last_idle_check = Instant::now();
    // since when every input has been idle (quiet streams): event time moves on from the last
    // window closed by the processing time since, so commands in force expire
    let mut all_idle_since: Option<Instant> = None;
    let mut stopping = false;
    loop {
        streams.receive(inputs, Duration::ZERO);
        // a stop (Ctrl-C under --serve) ends every input where it is, as its end would:
        // what was read goes through, open windows close
        if !stopping && stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) {
            stopping = true;
            tracing::info!("stopping: inputs end where they are");
            for i in 0..reading.len() {
                if reading[i].done {
                    continue;
                }
                if let Some(c) = &mut reading[i].chunks
                    && !c.inflight.is_empty()
                {
                    c.cut = true; // its chunks in flight go through, then it ends
                    continue;
                }
                let p = parsers.of_input[i].expect("inputs being read have a parser");
                let base: u64 = read_bytes.iter().sum::<u64>() - read_bytes[i];
                let r = &mut reading[i];
                let mut feed = Feed::new(agg, x, &r.id, progress, base);
                r.lines.flush(&mut feed).map_err(DriveError::Stage)?;
                end_input(
                    i,
                    p,
                    reading,
                    inputs,
                    parsers,
                    stats,
                    (agg, x, progress, base),
                )?;
            }
        }
        let ready = |i: usize, inputs: &[Opened]| match &inputs[i].source {
            Source::File(_) => true,
            Source::Stream(s) => s.ready(),
        };
        let pending: Vec<usize> = (0..reading.len()).filter(|&i| !reading[i].done).collect();
        if pending.is_empty() {
            break;
        }
        // the ready input furthest behind in event time (not started first), busy ones first
        let next = pending
            .iter()
            .copied()
            .filter(|&i| ready(i, inputs))
            .min_by_key(|&i| (reading[i].idle, agg.newest(&reading[i].id), i));
        // quiet streams go idle, even while other inputs keep the loop busy
        if last_idle_check.elapsed() >= runtime.flush_after {
            last_idle_check = Instant::now();
            for (i, r) in reading.iter_mut().enumerate() {
                if !r.done
                    && !r.idle
                    && !ready(i, inputs)
                    && r.last_data.elapsed() >= runtime.idle_timeout
                {
                    r.idle = true;
                    tracing::info!(input = %r.id, "input idle");
                    Stage::<X>::input_idle(agg, &r.id, x).map_err(DriveError::Stage)?;
                }
            }
        }
        let Some(i) = next else {
            // every input left is a quiet stream: wait for bytes
            x.quiet(&mut all_idle_since)
                .map_err(|e| DriveError::Stage(StageError::Output(e)))?;
            streams.receive(inputs, runtime.flush_after);
            continue;
        };
        all_idle_since = None;
        let p = parsers.of_input[i].expect("inputs being read have a parser");
        input::make_room(inputs, i);
        let base: u64 = read_bytes.iter().sum::<u64>() - read_bytes[i];
        let in_flight: usize = reading
            .iter()
            .filter_map(|r| r.chunks.as_ref())
            .map(|c| c.inflight.len())
            .sum();
        let r = &mut reading[i];
        let status = if let (Some(pool), Some(c)) = (pool, &mut r.chunks) {
            // keep the threads busy: cut more of this file (one chunk at least)
            while !c.cut
                && c.inflight.len() < depth
                && (c.inflight.is_empty() || in_flight + c.inflight.len() < 2 * depth)
            {
                input::make_room(inputs, i);
                let input::Opened {
                    name,
                    source: Source::File(reader),
                    ..
                } = &mut inputs[i]
                else {
                    unreachable!("only files are cut into chunks")
                };
                let read_error = |source| DriveError::Read {
                    input: name.clone(),
                    source,
                };
                if c.source.is_none() {
                    c.source = Some(match reader.map_rest().map_err(read_error)? {
                        Some((map, at)) => ChunkSource::Mapped {
                            map,
                            at,
                            parsed: at,
                            released: at,
                        },
                        None => ChunkSource::Read,
                    });
                }
                let (chunk, status) = match c.source.as_mut().expect("set above") {
                    ChunkSource::Mapped { map, at, .. } => {
                        let input: ingest::parallel::SharedInput = map.clone();
                        // the excess of a line too long is never read: its pages go now
                        let mut release = |from, to| {
                            map.release(from, to);
                        };
                        c.reader
                            .cut(&input, at, CHUNK_LINES, opts.turn_bytes, &mut release)
                    }
                    ChunkSource::Read => c
                        .reader
                        .read(
                            reader,
                            CHUNK_LINES,
                            opts.turn_bytes,
                            c.buffers.pop().unwrap_or_default(),
                        )
                        .map_err(read_error)?,
                };
                let parser = match c.spare.pop() {
                    Some(p) => p,
                    None => parsers.parsers[p]
                        .0
                        .parser_for(&parsers.mapping, &c.name, None)
                        .map_err(|source| DriveError::Parser {
                            input: c.name.to_string(),
                            source,
                        })?,
                };
                c.inflight.push(pool.submit(&c.name, chunk, parser, opts));
                c.cut = status == ReadStatus::End;
            }
            let mut parsed = c.inflight.wait_oldest().expect("a chunk in flight");
            stats.merge(&parsed.stats);
            read_bytes[i] += parsed.stats.bytes;
            let mut feed = Feed::new(agg, x, &r.id, progress, base);
            parsed
                .deliver(&c.name, &mut feed)
                .map_err(DriveError::Stage)?;
            feed.progress(read_bytes[i]);
            c.spare.push(parsed.parser);
            // (a chunk of a mapped file has no buffer to give back)
            if parsed.buffer.capacity() > 0 {
                c.buffers.push(parsed.buffer);
            }
            if let Some(ChunkSource::Mapped {
                map,
                parsed: done,
                released,
                ..
            }) = &mut c.source
            {
                *done += parsed.stats.bytes as usize;
                if *done - *released >= ingest::parallel::RELEASE_BYTES {
                    *released = map.release(*released, *done);
                }
            }
            if c.cut && c.inflight.is_empty() {
                ReadStatus::End
            } else {
                ReadStatus::More
            }
        } else {
            let parser = parsers.parsers[p].1.as_mut();
            let mut feed = Feed::new(agg, x, &r.id, progress, base);
            let status = match &mut inputs[i].source {
                Source::File(reader) => {
                    r.lines
                        .read(reader, parser, opts, stats, &mut feed, CHUNK_LINES)
                }
                Source::Stream(reader) => {
                    r.lines
                        .read(reader, parser, opts, stats, &mut feed, CHUNK_LINES)
                }
            };
            read_bytes[i] = r.lines.bytes();
            match status {
                Ok(s) => s,
                Err(ReadError::Io { input, source }) => {
                    return Err(DriveError::Read { input, source });
                }
                Err(ReadError::Sink(e)) => return Err(DriveError::Stage(e)),
            }
        };
        r.last_data = Instant::now();
        r.idle = false;
        let mut feed = Feed::new(agg, x, &r.id, progress, base);
        // rows of a chunk go through now: a slow stream's records are not held back
        r.lines.flush(&mut feed).map_err(DriveError::Stage)?;
        if status == ReadStatus::End {
            end_input(
                i,
                p,
                reading,
                inputs,
                parsers,
                stats,
                (agg, x, progress, base),
            )?;
        }
    }
    Ok(())
}

/// Input `i` (of parser `p`) has ended: it is closed, its parser hands over what it held
/// back when no other input uses it, and the pipeline removes it.
fn end_input<X: Exchange + ?Sized>(
    i: usize,
    p: usize,
    reading: &mut [Reading],
    inputs: &mut [Opened],
    parsers: &mut Parsers,
    stats: &mut IngestStats,
    (agg, x, progress, base): (&mut Aggregate, &mut X, &ProgressBar, u64),
) -> Result<(), DriveError<X::Error>> {
    reading[i].done = true;
    inputs[i].close();
    if let Some(c) = &mut reading[i].chunks {
        // a mapped file is unmapped: the pages not released yet leave the resident memory
        // now, not when the run ends (a run over many files would keep each one's tail)
        c.source = None;
    }
    // the last input of a parser lets it hand over what it held back
    let users = &parsers.parsers[p].2;
    if users.iter().all(|&u| u == i || reading[u].done) {
        let r = &mut reading[i];
        let mut feed = Feed::new(agg, x, &r.id, progress, base);
        r.lines
            .finish_parser(parsers.parsers[p].1.as_mut(), stats, &mut feed)
            .map_err(DriveError::Stage)?;
    }
    Stage::<X>::remove_input(agg, &reading[i].id, Removal::Ended, x).map_err(DriveError::Stage)
}

/// Stage 2 as the driver's turns see it: in this thread ([`Local`]), or on its own
/// ([`threaded::ToThread`]).
trait Judging: Exchange {
    /// Every input left is a quiet stream, idle since `all_idle_since` (set on the first
    /// call): tells the outputs once, and lets event time move on from the last window closed
    /// by the processing time since, so that windows close and commands in force expire.
    ///
    /// # Errors
    /// The outputs'.
    fn quiet(&mut self, all_idle_since: &mut Option<Instant>) -> Result<(), Self::Error>;
}

impl<O: Outputs + ?Sized> Judging for Local<'_, O> {
    fn quiet(&mut self, all_idle_since: &mut Option<Instant>) -> Result<(), Self::Error> {
        if !self.judge.all_idle() {
            return Ok(());
        }
        if all_idle_since.is_none() {
            self.out.idle().map_err(StageError::Output)?;
        }
        let since = *all_idle_since.get_or_insert_with(Instant::now);
        if let Some(end) = self.judge.last_closed_us() {
            let passed = i64::try_from(since.elapsed().as_micros()).unwrap_or(i64::MAX);
            self.judge
                .advance(end.saturating_add(passed), self.out)
                .map_err(StageError::Output)?;
        }
        Ok(())
    }
}

impl Judging for threaded::ToThread {
    /// Never called: stage 2 runs apart only when every input is a regular file.
    fn quiet(&mut self, _: &mut Option<Instant>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Why a drive stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriveError<E> {
    /// An input could not be read (external; retrying may help).
    #[error("reading {input}: {source}")]
    Read {
        /// The input.
        input: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A parser for another thread could not be built (as the first one was, this is a bug).
    #[error("{input}: {source}")]
    Parser {
        /// The input.
        input: String,
        /// Why.
        #[source]
        source: ingest::Error,
    },
    /// A stage (or the outputs behind it) failed.
    #[error(transparent)]
    Stage(StageError<E>),
}

impl<E> DriveError<E> {
    /// The same failure with the stage's error mapped by `f`.
    fn map_stage<F>(self, f: impl FnOnce(StageError<E>) -> StageError<F>) -> DriveError<F> {
        match self {
            DriveError::Read { input, source } => DriveError::Read { input, source },
            DriveError::Parser { input, source } => DriveError::Parser { input, source },
            DriveError::Stage(e) => DriveError::Stage(f(e)),
        }
    }
}

/// Counts pair totals for the summary on their way to the outputs.
/// Most distinct pairs the summary tallies; later pairs count under ([`OTHER`], [`OTHER`])
/// (a row of the summary only: the pair windows themselves are written whole).
const TALLY_PAIRS: usize = 100_000;

struct Tally<O> {
    inner: O,
    /// What `--serve` shows: the golden signals and map, and the counters of closed
    /// windows, findings, commands, alerts and dead letters.
    served: Option<Arc<crate::kafka::metrics::Metrics>>,
    /// Alert sinks (`[[alerting.sinks]]`), when configured.
    alerting: Option<crate::alerting::Dispatcher>,
    /// Per pair over the run: requests, errors, worst window p99 (µs).
    pairs: PairMap<(u64, u64, Option<u64>)>,
    /// What the findings were about, for the summary.
    found: Found,
}

/// Findings by what they are about (signature, subject and rule), in the order each was
/// first found: what the summary lists.
#[derive(Debug, Default)]
struct Found {
    /// Index in `subjects` by key.
    index: HashMap<String, usize>,
    subjects: Vec<FoundSubject>,
}

/// The findings of one signature on one subject over the run.
#[derive(Debug, Clone, PartialEq)]
struct FoundSubject {
    /// `<signature> on <subject>` (and the rule's name, for a rule).
    label: String,
    findings: u64,
    /// Start of the first finding's window, µs.
    first_us: i64,
    /// End of the last finding's window, µs.
    last_us: i64,
}

/// How many subjects of findings the summary names; the others are counted.
const FOUND_SUBJECTS: usize = 10;

impl Found {
    fn add(&mut self, f: &schemas::Finding) {
        let rule = f
            .rule
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let key = format!("{}{rule}/{}", f.signature, f.subject.key());
        if let Some(&i) = self.index.get(&key) {
            let s = &mut self.subjects[i];
            s.findings += 1;
            s.first_us = s.first_us.min(f.window.start_us);
            s.last_us = s.last_us.max(f.window.end_us);
            return;
        }
        self.index.insert(key, self.subjects.len());
        self.subjects.push(FoundSubject {
            label: format!("{}{rule} on {}", f.signature, f.subject),
            findings: 1,
            first_us: f.window.start_us,
            last_us: f.window.end_us,
        });
    }

    /// One line per subject (the first [`FOUND_SUBJECTS`]), then how many more.
    fn lines(&self) -> String {
        use schemas::time::Rfc3339;
        let mut s = String::new();
        for f in self.subjects.iter().take(FOUND_SUBJECTS) {
            let n = if f.findings == 1 {
                "1 finding".to_owned()
            } else {
                format!("{} findings", thousands(f.findings))
            };
            s += &format!(
                "    {}: {n}, windows from {} to {}\n",
                f.label,
                Rfc3339(f.first_us),
                Rfc3339(f.last_us)
            );
        }
        if self.subjects.len() > FOUND_SUBJECTS {
            s += &format!(
                "    and {} more (--findings FILE keeps every finding)\n",
                thousands((self.subjects.len() - FOUND_SUBJECTS) as u64)
            );
        }
        s
    }
}

impl<O> Tally<O> {
    /// Counts a pair window in the summary's pairs.
    fn tally(&mut self, p: &schemas::PairWindow) {
        if p.requests > 0 {
            // names are copied only for a pair not seen before
            let mut key = PairRef(&p.source, &p.destination);
            if self.pairs.len() >= TALLY_PAIRS && !self.pairs.contains_key(&key) {
                key = PairRef(OTHER, OTHER);
            }
            let t = self.pairs.entry_ref(&key).or_default();
            t.0 += p.requests;
            t.1 += p.errors;
            if let Some(l) = p.latency {
                t.2 = Some(t.2.map_or(l.p99_us, |w| w.max(l.p99_us)));
            }
        }
    }
}

impl<O: Outputs> Outputs for Tally<O> {
    type Error = O::Error;

    fn pair_window(&mut self, p: &schemas::PairWindow) -> Result<(), O::Error> {
        self.tally(p);
        self.inner.pair_window(p)
    }
    fn pair_windows(&mut self, ws: &[&schemas::PairWindow]) -> Result<(), O::Error> {
        for p in ws {
            self.tally(p);
        }
        self.inner.pair_windows(ws)
    }
    fn node_window(&mut self, w: &schemas::NodeWindow) -> Result<(), O::Error> {
        self.inner.node_window(w)
    }
    fn wants_tables(&self) -> bool {
        self.served.is_some() || self.inner.wants_tables()
    }
    fn writes_beside_judging(&self) -> bool {
        self.inner.writes_beside_judging()
    }
    fn window_tables(&mut self, t: &crate::pipeline::WindowTables) -> Result<(), O::Error> {
        if let Some(m) = &self.served {
            m.golden.tables(t);
        }
        self.inner.window_tables(t)
    }
    fn finding(&mut self, f: &schemas::Finding) -> Result<(), O::Error> {
        if let Some(m) = &self.served {
            m.golden.finding(f);
            m.findings
                .get_or_create(&crate::kafka::metrics::SignatureLabel {
                    signature: f.signature.as_str().to_owned(),
                })
                .inc();
        }
        self.found.add(f);
        self.inner.finding(f)
    }
    fn command(&mut self, c: &schemas::RemediationCommand) -> Result<(), O::Error> {
        if let Some(m) = &self.served {
            m.golden.command(c);
            m.commands.inc();
        }
        self.inner.command(c)
    }
    fn alert(&mut self, a: &schemas::Alert) -> Result<(), O::Error> {
        if let Some(m) = &self.served {
            m.golden.alert(a);
            m.alerts.inc();
        }
        if let Some(d) = &self.alerting {
            d.send(a);
        }
        self.inner.alert(a)
    }
    fn audit(&mut self, a: &schemas::AuditRecord) -> Result<(), O::Error> {
        if let Some(m) = &self.served {
            m.golden.audit(a);
        }
        self.inner.audit(a)
    }
    fn dead_letter(&mut self, d: &DeadLetter<'_>) -> Result<(), O::Error> {
        if let Some(m) = &self.served {
            m.dead_letters
                .get_or_create(&crate::kafka::metrics::ReasonLabel {
                    reason: d.reason.to_owned(),
                })
                .inc();
        }
        self.inner.dead_letter(d)
    }
    fn window_closed(&mut self, w: schemas::Window) -> Result<(), O::Error> {
        if let Some(m) = &self.served {
            m.golden.publish();
            m.windows_closed.inc();
        }
        self.inner.window_closed(w)
    }
    fn idle(&mut self) -> Result<(), O::Error> {
        self.inner.idle()
    }
    fn flush(&mut self) -> Result<(), O::Error> {
        self.inner.flush()
    }
}

/// How many pairs the summary lists.
const BUSIEST_PAIRS: usize = 5;

/// `graywatch replay`.
///
/// # Errors
/// A bad config, an input that can't be read, an output that can't be written (a closed
/// stdout is [`crate::pipeline::jsonl::JsonLinesError::StdoutClosed`], which the binary turns into a quiet exit).
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config_path = args.input.config.as_deref();
    let config = crate::config::Config::load(config_path)?.validate(config_path)?;
    // serving first: reading an input's first line (to tell its format) may wait on a pipe
    let served = args
        .serve
        .map(|listen| serve(listen, config.http.top_pairs))
        .transpose()?;
    let streams = Streams::default();
    let mut inputs = input::open_all(&args.input.inputs, &streams)?;
    // stdout takes every kind of document not sent to a file
    let stdout = [&args.findings, &args.commands, &args.alerts, &args.audit]
        .into_iter()
        .chain((!args.no_windows).then_some(&args.windows))
        .any(|p| p.as_deref().is_none_or(|p| p.as_os_str() == "-"));
    input::check_outputs(
        &inputs,
        &[
            ("--windows", &args.windows),
            ("--findings", &args.findings),
            ("--commands", &args.commands),
            ("--alerts", &args.alerts),
            ("--audit", &args.audit),
            ("--rejects", &args.input.rejects),
        ],
        stdout,
    )?;
    let parsers = parsers(&args.input, &mut inputs, &config.mapping, &streams)?;
    let threads = args.threads.map_or_else(cores, usize::from);
    let outputs = JsonLinesOutputs::open(&JsonLinesConfig {
        windows: args.windows.as_deref(),
        findings: args.findings.as_deref(),
        commands: args.commands.as_deref(),
        alerts: args.alerts.as_deref(),
        audit: args.audit.as_deref(),
        rejects: args.input.rejects.as_deref(),
        write_windows: !args.no_windows,
        archive: args.archive.as_deref(),
        threads,
        batch: inputs.iter().all(|i| matches!(i.source, Source::File(_))),
    })?;
    let mut out = Tally {
        inner: outputs,
        served: served.as_ref().map(|s| Arc::clone(&s.metrics)),
        alerting: crate::alerting::Dispatcher::start(&config.alerting)?,
        pairs: PairMap::default(),
        found: Found::default(),
    };
    // The one clock read of a run: records more than a day ahead of it are not believed.
    let mut pipeline = Pipeline::new(&config, crate::not_after_now());
    let progress = progress_bar(&inputs);
    let driven = drive(
        &args.input,
        inputs,
        parsers,
        &streams,
        &config.runtime,
        &mut pipeline,
        &mut out,
        &progress,
        threads,
        served.as_ref().map(|s| &*s.shutdown),
    );
    progress.finish_and_clear();
    let read = driven.map_err(|e| match e {
        DriveError::Stage(StageError::Output(e)) => anyhow::Error::from(e),
        other => anyhow::Error::from(other),
    })?;
    out.flush()?;
    let archived = out
        .inner
        .close_archive()?
        .map(|a| (a.files, a.rows, a.skipped));
    // what the sinks hold is delivered before the process ends (or given up after a while)
    let sinks = out
        .alerting
        .take()
        .map(|d| d.close(Instant::now() + ALERTS_AT_EXIT))
        .unwrap_or_default();
    if !args.quiet {
        let mut text = summary(
            &args,
            &read,
            started.elapsed(),
            &pipeline,
            &out.pairs,
            &out.found,
            &config.detect,
        );
        if served
            .as_ref()
            .is_some_and(|s| s.shutdown.load(std::sync::atomic::Ordering::SeqCst))
        {
            text += "  stopped   by a signal: the inputs end where they were; their open windows closed\n";
        }
        if let (Some((files, rows, skipped)), Some(dir)) = (archived, &args.archive) {
            text += &format!(
                "  archive   {} Parquet file(s), {} rows in {} (graywatch query --archive {} \"SELECT …\")\n",
                thousands(files),
                thousands(rows),
                dir.display(),
                dir.display()
            );
            if skipped > 0 {
                text += &format!(
                    "            {} window(s) not written again: the archive holds them from an earlier replay (another --archive DIR keeps both)\n",
                    thousands(skipped)
                );
            }
        }
        for (name, c) in &sinks {
            text += &format!(
                "  sink      {name}: {} delivered, {} retried, {} failed, {} dropped\n",
                c.delivered, c.retries, c.failed, c.dropped
            );
        }
        say(&text);
    }
    if let Some(s) = served {
        use std::sync::atomic::Ordering;
        if s.shutdown.load(Ordering::SeqCst) {
            // interrupted: what was read is written, but the inputs were not read to their end
            std::process::exit(130);
        }
        while !s.shutdown.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // The process ends here: the operating system takes the memory back at once, where
    // freeing the baselines and tallies of 100 k pairs item by item took 0.2 s on one core.
    // Both are in-memory state only (the outputs were flushed and closed above).
    std::mem::forget(pipeline);
    std::mem::forget(std::mem::take(&mut out.pairs));
    Ok(())
}

/// `--serve`: the HTTP endpoint of `run` (`/map`, `/metrics`, `/healthz`) on `listen`, fed by
/// this replay, showing `top_pairs` pairs (`[http] top-pairs`); SIGINT or SIGTERM stop the process (at once while replaying, after the
/// replay when waiting).
fn serve(listen: std::net::SocketAddr, top_pairs: usize) -> anyhow::Result<Served> {
    use std::sync::atomic::AtomicBool;
    let metrics = Arc::new(crate::kafka::metrics::Metrics {
        golden: Arc::new(crate::golden::GoldenSignals::new(top_pairs)),
        // ready at once: no partitions to wait for, no main loop to stall (a replay that
        // ended keeps serving what it saw)
        ready: AtomicBool::new(true),
        last_turn_ms: std::sync::atomic::AtomicI64::new(i64::MAX),
        ..crate::kafka::metrics::Metrics::default()
    });
    let shutdown = Arc::new(AtomicBool::new(false));
    let bound =
        crate::kafka::http::start(listen, Arc::clone(&metrics), Arc::clone(&shutdown), None)
            .map_err(|e| anyhow::anyhow!("--serve: {e}"))?;
    say(&format!(
        "graywatch replay: the live map on http://{bound}/map (metrics on /metrics); it stays up after the replay until Ctrl-C\n"
    ));
    Ok(Served { metrics, shutdown })
}

/// What `--serve` started.
struct Served {
    metrics: Arc<crate::kafka::metrics::Metrics>,
    /// Set by SIGINT or SIGTERM: the inputs end where they are (the windows close, the
    /// outputs and the archive are completed), then the process ends.
    shutdown: Arc<std::sync::atomic::AtomicBool>,
}

/// How long `replay` waits at its end for alert sinks to deliver what they hold.
const ALERTS_AT_EXIT: Duration = Duration::from_secs(60);

fn summary(
    args: &ReplayArgs,
    read: &InputSummary,
    elapsed: Duration,
    pipeline: &Pipeline,
    pairs: &PairMap<(u64, u64, Option<u64>)>,
    found: &Found,
    detect: &detect::DetectConfig,
) -> String {
    let w = &detect.window;
    let a = pipeline.aggregate.counters();
    let j = pipeline.judge.counters();
    let mut s = format!(
        "graywatch replay: {} input(s)\n{}",
        args.input.inputs.len(),
        summarize_input(read, elapsed)
    );
    s += &format!(
        "  late      {} (beyond the allowed lateness of {})\n",
        thousands(a.late_records),
        humantime::format_duration(w.allowed_lateness)
    );
    if a.late_records > 0 && a.late_records * 100 >= read.stats.records.max(1) {
        s += &late_hints(&a, w.allowed_lateness);
    }
    if a.future_records > 0 {
        s += &format!(
            "  future    {} (start more than a day after this machine's clock; not aggregated)\n",
            thousands(a.future_records)
        );
    }
    if a.ahead_records > 0 {
        s += &format!(
            "  ahead     {} (start more than {} after their input's newest record, and no \
             later record confirmed the jump: not aggregated)\n",
            thousands(a.ahead_records),
            humantime::format_duration(w.max_ahead)
        );
    }
    if a.clamped_records > 0 {
        s += &format!(
            "  clamped   {} (in flight over more than {} windows: counted in the first {})\n",
            thousands(a.clamped_records),
            detect::pair::MAX_SPAN_WINDOWS,
            detect::pair::MAX_SPAN_WINDOWS
        );
    }
    let m = pipeline.judge.merger_counters();
    if a.overflow_records > 0 || m.overflow_partials > 0 {
        s += &format!(
            "  overflow  {} records and {} merged pair aggregates of new pairs in windows already \
             holding [detect.window] max-pairs ({}) pairs: counted under {OTHER}\n",
            thousands(a.overflow_records),
            thousands(m.overflow_partials),
            thousands(w.max_pairs as u64),
        );
    }
    if m.late_partials > 0 {
        s += &format!(
            "  late      {} pair aggregates of an input that woke up after its windows closed \
             without it (it was idle)\n",
            thousands(m.late_partials)
        );
    }
    s += &format!(
        "  windows   {} closed ({} each), {} pair and {} node aggregates\n",
        thousands(j.windows),
        humantime::format_duration(w.length),
        thousands(j.pair_windows),
        thousands(j.node_windows)
    );
    let findings: Vec<String> = j.findings.iter().map(|(k, n)| format!("{k} {n}")).collect();
    s += &format!(
        "  findings  {}{}\n",
        j.findings.values().sum::<u64>(),
        if findings.is_empty() {
            String::new()
        } else {
            format!(" ({})", findings.join(", "))
        }
    );
    s += &found.lines();
    if !j.rules.is_empty() || j.rule_errors > 0 {
        let rules: Vec<String> = j.rules.iter().map(|(k, n)| format!("{k} {n}")).collect();
        s += &format!(
            "  rules     {} findings ({}){}\n",
            thousands(j.rules.values().sum::<u64>()),
            rules.join(", "),
            if j.rule_errors > 0 {
                format!(", {} failed runs (logged)", thousands(j.rule_errors))
            } else {
                String::new()
            }
        );
    }
    s += &format!("  commands  {}, alerts {}\n", j.commands, j.alerts);
    if !pairs.is_empty() {
        let mut busiest: Vec<_> = pairs.iter().collect();
        busiest.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        let of = if pairs.len() > TALLY_PAIRS {
            format!("of more than {}", thousands(TALLY_PAIRS as u64))
        } else {
            format!("of {}", thousands(pairs.len() as u64))
        };
        s += &format!("  busiest pairs ({of}):\n");
        for ((source, destination), (requests, errors, p99)) in
            busiest.into_iter().take(BUSIEST_PAIRS)
        {
            let p99 = match p99 {
                Some(us) => format!("worst p99 {:.1} ms", *us as f64 / 1000.0),
                None => "no latency in this format".into(),
            };
            s += &format!(
                "    {source} -> {destination}: {} requests, {:.1} % errors, {p99}\n",
                thousands(*requests),
                100.0 * *errors as f64 / *requests as f64,
            );
        }
    }
    s
}

/// Why records were late, as far as their durations tell: slow requests (logged when they
/// complete, after the allowed lateness), records whose lines came out of time order (quick
/// requests), and records without a duration (can't be told). One `hint` line per cause
/// seen, biggest first; every line ends with where to see the records.
fn late_hints(a: &crate::pipeline::aggregate::AggregateCounters, lateness: Duration) -> String {
    let lateness = humantime::format_duration(lateness);
    let mut causes = [
        (
            a.late_slow,
            format!(
                "{} of the late records took {lateness} or longer: proxies log a request when \
                 it completes, so keep [detect.window] allowed-lateness above their timeout",
                thousands(a.late_slow)
            ),
        ),
        (
            a.late_quick(),
            format!(
                "{} of the late records took less than {lateness}: their lines are out of time \
                 order (logs of several proxies or rotated files joined into one input? give \
                 each as its own input, graywatch interleaves them), or a clock jumped",
                thousands(a.late_quick())
            ),
        ),
        (
            a.late_untimed,
            format!(
                "{} of the late records have no duration (the format logs none), so slowness \
                 can't explain them: their lines are out of time order (give each proxy's log \
                 as its own input), or the proxy logs requests when they complete (raise \
                 [detect.window] allowed-lateness)",
                thousands(a.late_untimed)
            ),
        ),
    ];
    causes.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut s = String::new();
    for (n, text) in causes {
        if n > 0 {
            s += &format!("  hint      {text} (--rejects FILE lists every late record)\n");
        }
    }
    s
}

/// A progress indicator, drawn only when stderr is a terminal: a bar over the inputs' total
/// size, or a byte counter when an input is a stream (size unknown).
pub fn progress_bar(inputs: &[Opened]) -> ProgressBar {
    let target = ProgressDrawTarget::stderr();
    if inputs.iter().any(|i| i.size.is_none()) {
        let spinner = ProgressBar::with_draw_target(None, target);
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {decimal_bytes} read, {decimal_bytes_per_sec}")
                .expect("valid progress template"),
        );
        spinner.enable_steady_tick(Duration::from_millis(200));
        return spinner;
    }
    let total: u64 = inputs.iter().filter_map(|i| i.size).sum();
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {decimal_bytes}/{decimal_total_bytes} {wide_bar} {decimal_bytes_per_sec} eta {eta}",
        )
        .expect("valid progress template"),
    );
    bar
}

/// "1,234,567" for summaries.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The summary lines about input: formats, lines, records, rejects by reason, parser counters.
pub fn summarize_input(read: &InputSummary, elapsed: Duration) -> String {
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
    let d = stats.dropped_values;
    if !d.is_empty() {
        s += &format!(
            "  dropped   {} request ids longer than {} bytes, {} upstream addresses longer than {} \
             bytes (the records kept, without them)\n",
            thousands(d.request_ids),
            schemas::flow::MAX_REQUEST_ID_BYTES,
            thousands(d.addresses),
            schemas::flow::MAX_ADDRESS_BYTES,
        );
    }
    if !read.counters.is_empty() {
        // one line per counter name, summed over the parsers (one per input)
        let mut summed: Vec<(&str, u64)> = Vec::new();
        for &(name, n) in &read.counters {
            match summed.iter_mut().find(|(s, _)| *s == name) {
                Some((_, total)) => *total += n,
                None => summed.push((name, n)),
            }
        }
        let c: Vec<String> = summed
            .iter()
            .map(|(name, n)| format!("{name} {}", thousands(*n)))
            .collect();
        s += &format!("  parser    {}\n", c.join(", "));
    }
    if let Some(hint) = rejects_hint(stats) {
        s += hint;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::aggregate::AggregateCounters;

    #[test]
    fn lines_too_long_are_blamed_on_the_input_not_the_format() {
        let mut stats = IngestStats {
            lines: 3,
            ..IngestStats::default()
        };
        stats.rejects.insert(ingest::RejectReason::LineTooLong, 3);
        let hint = rejects_hint(&stats).unwrap();
        assert!(
            hint.starts_with("  hint      most lines were longer than --max-line-bytes"),
            "{hint}"
        );
        assert!(!hint.contains("is --format right"), "{hint}");
        stats.rejects.clear();
        stats.rejects.insert(ingest::RejectReason::Malformed, 2);
        assert!(rejects_hint(&stats).unwrap().contains("is --format right?"));
        stats.rejects.insert(ingest::RejectReason::Malformed, 1);
        assert_eq!(rejects_hint(&stats), None, "1 of 3 rejected");

        assert_eq!(not_lines(b"[2024-05-01T00:00:00.000Z] \"GET", 1024), None);
        assert!(
            not_lines(&[b'x'; 1024], 1024)
                .unwrap()
                .contains("longer than --max-line-bytes (1024 bytes)")
        );
        assert!(
            not_lines(&[0x1f, 0x8b, 8, 0], 1024)
                .unwrap()
                .contains("gzip-compressed")
        );
    }

    #[test]
    fn late_hints_blame_what_the_durations_show() {
        let lateness = Duration::from_secs(15);
        let slow = AggregateCounters {
            late_records: 3,
            late_slow: 3,
            ..AggregateCounters::default()
        };
        let text = late_hints(&slow, lateness);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("  hint      3 of the late records took 15s or longer"));
        // lines out of order: quick requests, and a format without durations
        let shuffled = AggregateCounters {
            late_records: 120,
            late_slow: 1,
            late_untimed: 0,
            ..AggregateCounters::default()
        };
        let text = late_hints(&shuffled, lateness);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with(
                "  hint      119 of the late records took less than 15s: their lines are out of time order"
            ),
            "{text}"
        );
        assert!(lines[1].contains("1 of the late records took 15s or longer"));
        let untimed = AggregateCounters {
            late_records: 40,
            late_untimed: 40,
            ..AggregateCounters::default()
        };
        let text = late_hints(&untimed, lateness);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with("  hint      40 of the late records have no duration"),
            "{text}"
        );
        assert!(!text.contains("above their timeout"), "{text}");
    }

    #[test]
    fn found_names_subjects_and_windows_then_counts_the_rest() {
        let finding = |node: &str, start_us: i64| {
            serde_json::from_value::<schemas::Finding>(serde_json::json!({
                "schema_version": 1, "kind": "finding", "id": "x", "signature": "black-hole",
                "subject": {"kind": "node", "node": node},
                "window": {"start_us": start_us, "end_us": start_us + 10_000_000},
                "severity": "critical", "evidence": [], "callers": [], "summary": "s"
            }))
            .unwrap()
        };
        let mut found = Found::default();
        let t0 = 1_764_770_400_000_000; // 2025-12-03T14:00:00Z
        found.add(&finding("inventory", t0 + 20_000_000));
        found.add(&finding("inventory", t0));
        found.add(&finding("cart", t0 + 10_000_000));
        assert_eq!(
            found.lines(),
            "    black-hole on node inventory: 2 findings, windows from 2025-12-03T14:00:00Z to 2025-12-03T14:00:30Z\n\
             \x20   black-hole on node cart: 1 finding, windows from 2025-12-03T14:00:10Z to 2025-12-03T14:00:20Z\n"
        );
        for i in 0..FOUND_SUBJECTS {
            found.add(&finding(&format!("n{i}"), t0));
        }
        let text = found.lines();
        assert_eq!(text.lines().count(), FOUND_SUBJECTS + 1, "{text}");
        assert!(
            text.ends_with("    and 2 more (--findings FILE keeps every finding)\n"),
            "{text}"
        );
    }
}
